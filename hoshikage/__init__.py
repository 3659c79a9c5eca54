"""Hoshikage (星影): local GGUF models behind an OpenAI-compatible API, run by systemd."""

__version__ = "0.1.0"
