"""Documents into chunks that fit the model: on headings, then paragraphs, then lines and
sentences, and as a last resort on token boundaries. Token counts come from tiktoken
(`exporter.tokens`), with the model's encoding.

A document that fits the budget is one chunk, as in the founding article. Otherwise its
sections (a heading and what follows it, code fences respected) are packed in order into
chunks of at most the budget; a section larger than the budget is split into paragraphs,
each part keeping the section's heading so the model knows where it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from exporter.synthesize.keys import chunk_key, source_tag
from exporter.synthesize.loader import Document
from exporter.tokens import TokenCounter, encoding_for, token_counter

DEFAULT_MAX_CHUNK_TOKENS = 3000
ANSWER_RESERVE_TOKENS = 1024  # room for the question list or the answer
_HEADING = re.compile(r"^#{1,6}\s+\S")
_FENCE = ("```", "~~~")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# context windows (prompt plus answer) by model prefix; longest prefix first
_CONTEXTS: tuple[tuple[str, int], ...] = (
    ("gpt-4.1", 1_047_576), ("gpt-4o", 128_000), ("gpt-4-turbo", 128_000),
    ("gpt-4-32k", 32_768), ("gpt-4", 8_192), ("gpt-3.5-turbo-instruct", 4_096),
    ("gpt-3.5-turbo", 16_385), ("o1", 200_000), ("o3", 200_000), ("o4", 200_000),
    ("davinci-002", 16_384), ("babbage-002", 16_384),
)
DEFAULT_CONTEXT = 8_192


@dataclass(frozen=True)
class Chunk:
    document: Document
    index: int  # 0-based position in its document
    count: int  # chunks in the document
    text: str
    key: str  # hash of the templates and the text: the resumability key
    tokens: int

    @property
    def label(self) -> str:
        return f"{self.document.name} chunk {self.index + 1}/{self.count}"

    @property
    def source_tag(self) -> str:
        return source_tag(self.document.name)


def context_window(model: str) -> int:
    name = model.split(":")[1] if model.startswith("ft:") else model
    for prefix, tokens in _CONTEXTS:
        if name.startswith(prefix):
            return tokens
    return DEFAULT_CONTEXT


def chunk_budget(model: str, max_chunk_tokens: int | None, template_tokens: int) -> int:
    """Tokens a chunk may have: the user's maximum (or the default), and never more than the
    model's context leaves once the template and the answer are in."""
    room = context_window(model) - template_tokens - ANSWER_RESERVE_TOKENS
    wanted = max_chunk_tokens or DEFAULT_MAX_CHUNK_TOKENS
    return max(64, min(wanted, room))


def sections(text: str) -> list[str]:
    """The text cut before each Markdown heading outside code fences."""
    parts: list[list[str]] = [[]]
    in_fence = False
    for line in text.splitlines():
        if line.lstrip().startswith(_FENCE):
            in_fence = not in_fence
        elif not in_fence and _HEADING.match(line) and any(s.strip() for s in parts[-1]):
            parts.append([])
        parts[-1].append(line)
    return [block for block in ("\n".join(p).strip() for p in parts) if block]


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def _token_slices(text: str, budget: int, counter: TokenCounter) -> list[str]:
    tokens = counter.encoding.encode_ordinary(text)
    return [counter.encoding.decode(tokens[i:i + budget]) for i in range(0, len(tokens), budget)]


def _pieces(text: str, budget: int, count: Callable[[str], int],
            counter: TokenCounter) -> list[str]:
    """`text` in pieces of at most `budget` tokens: paragraphs, lines, sentences, tokens."""
    if count(text) <= budget:
        return [text]
    for splitter in (_paragraphs, str.splitlines, _SENTENCE_END.split):
        parts = [p for p in splitter(text) if p.strip()]
        if len(parts) > 1:
            return [piece for part in parts for piece in _pieces(part, budget, count, counter)]
    return _token_slices(text, budget, counter)


def _pack(units: list[str], budget: int, count: Callable[[str], int]) -> list[str]:
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for unit in units:
        size = count(unit) + 2  # the blank line between units
        if current and used + size > budget:
            chunks.append("\n\n".join(current))
            current, used = [], 0
        current.append(unit)
        used += size
    if current:
        chunks.append("\n\n".join(current))
    return chunks


def split_text(text: str, budget: int, counter: TokenCounter) -> list[str]:
    count = counter.text
    if count(text) <= budget:
        return [text]
    units: list[str] = []
    for section in sections(text):
        if count(section) <= budget:
            units.append(section)
            continue
        first, _, rest = section.partition("\n")
        heading = first if _HEADING.match(first) else None
        body = rest if heading is not None else section
        room = budget - (count(heading) + 2 if heading else 0)
        parts = _pack(_pieces(body, max(16, room), count, counter), max(16, room), count)
        units.extend(f"{heading}\n\n{part}" if heading else part for part in parts)
    return _pack(units, budget, count)


def chunk_documents(documents: list[Document], model: str, budget: int,
                    template_hash: str) -> list[Chunk]:
    counter = token_counter(encoding_for(model))
    chunks: list[Chunk] = []
    for document in documents:
        texts = [t.strip() for t in split_text(document.text, budget, counter) if t.strip()]
        chunks.extend(
            Chunk(document, index, len(texts), text, chunk_key(template_hash, text),
                  counter.text(text))
            for index, text in enumerate(texts)
        )
    return chunks
