"""Conversation memory: turns on disk (ChromaDB), K-Means summaries, recall, prompt assembly.

Nothing here is imported on the plain chat path: chromadb, torch and
sentence-transformers load on the first request that needs memory.
"""
