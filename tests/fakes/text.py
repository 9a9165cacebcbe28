"""Text helpers of the fake upstreams: token counts, stream pieces, stops."""

from __future__ import annotations


def word_count(text: str) -> int:
    return len(text.split())


def split_pieces(text: str, pieces: int = 4) -> list[str]:
    """Split text into at most ``pieces`` non-empty consecutive parts."""
    if not text:
        return []
    size = -(-len(text) // pieces)
    return [text[i : i + size] for i in range(0, len(text), size)]


def truncate_at_stop(text: str, stop: object) -> tuple[str, str | None]:
    """Cut text at the first stop sequence; returns the text and the sequence hit."""
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    hits = [(text.find(s), s) for s in stops if isinstance(s, str) and s and s in text]
    if not hits:
        return text, None
    index, seq = min(hits)
    return text[:index], seq


def truncate_words(text: str, limit: object) -> tuple[str, bool]:
    """Keep at most ``limit`` words; returns the text and whether it was cut."""
    if not isinstance(limit, int) or limit <= 0:
        return text, False
    body = text.lstrip(" ")  # a leading space belongs to the first word (" yes" is 1 token)
    words = body.split(" ")
    if len(words) <= limit:
        return text, False
    return text[: len(text) - len(body)] + " ".join(words[:limit]), True
