"""OpenAI's own endpoints: Chat Completions, Completions, models and embeddings, and the protocol they define
(the request shapes the other surfaces build on)."""
