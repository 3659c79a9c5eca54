"""Inference: models, scheduling and token streams, kept apart from HTTP."""
