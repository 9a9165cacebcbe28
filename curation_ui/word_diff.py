"""A word-level diff of two texts (the model's answer and the reviewer's edit) as sanitized
HTML: removed words in <del>, added words in <ins>, everything else as it was."""

from __future__ import annotations

import difflib
import html
import re

from curation_ui.render import sanitize

# a word, a run of whitespace, or one other character: joined back, the tokens are the text
_TOKEN = re.compile(r"\w+|\s+|[^\w\s]", re.UNICODE)
MAX_TOKENS = 20_000  # difflib is quadratic at worst; past this, diff whole lines instead


def word_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _tokens(text: str, by_line: bool) -> list[str]:
    return text.splitlines(keepends=True) if by_line else word_tokens(text)


def word_diff(old: str, new: str) -> list[tuple[str, str]]:
    """(kind, text) runs: kind is "same", "del" or "ins"; the "same" and "del" runs joined are
    `old`, the "same" and "ins" runs joined are `new`."""
    a, b = word_tokens(old), word_tokens(new)
    if len(a) + len(b) > 2 * MAX_TOKENS:
        a, b = _tokens(old, True), _tokens(new, True)
    runs: list[tuple[str, str]] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            runs.append(("same", "".join(a[i1:i2])))
            continue
        if i2 > i1:
            runs.append(("del", "".join(a[i1:i2])))
        if j2 > j1:
            runs.append(("ins", "".join(b[j1:j2])))
    return runs


def word_diff_html(old: str, new: str) -> str:
    """The diff as one sanitized block (`dir="auto"`, whitespace kept)."""
    parts = []
    for kind, text in word_diff(old, new):
        escaped = html.escape(text)
        parts.append(escaped if kind == "same" else f"<{kind}>{escaped}</{kind}>")
    return sanitize(f'<div class="tl-diff" dir="auto">{"".join(parts)}</div>')
