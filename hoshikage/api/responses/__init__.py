"""The Responses API and its Conversations, stateful through conversation memory (HTTP and WebSocket)."""
