"""Ollama's API under /api/, for the clients and front ends written for Ollama."""
