"""Split a turn's text into the sentences memory embeds, clusters and recalls."""

from __future__ import annotations

import re

# After . ! ? followed by space, after 。！？ (Japanese needs no space), at blank-ish lines.
_BOUNDARY = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])|\n+")
# A full stop after these is not the end of a sentence.
_ABBREVIATIONS = ("mr.", "ms.", "mrs.", "dr.", "st.", "prof.", "e.g.", "i.e.", "etc.", "vs.", "no.")
# Longer pieces are cut: the embedding model reads ~256 tokens of each anyway.
MAX_SENTENCE_CHARS = 600


def split_sentences(text: str) -> list[str]:
    sentences: list[str] = []
    pieces: list[str] = []
    for piece in _BOUNDARY.split(text):
        if pieces and pieces[-1].lower().endswith(_ABBREVIATIONS) and piece.strip():
            pieces[-1] = f"{pieces[-1]} {piece.strip()}"
        else:
            pieces.append(piece.strip())
    for piece in pieces:
        piece = piece.strip()
        while len(piece) > MAX_SENTENCE_CHARS:
            cut = piece.rfind(" ", 0, MAX_SENTENCE_CHARS)
            cut = cut if cut > MAX_SENTENCE_CHARS // 2 else MAX_SENTENCE_CHARS
            sentences.append(piece[:cut].strip())
            piece = piece[cut:].strip()
        if piece:
            sentences.append(piece)
    return sentences
