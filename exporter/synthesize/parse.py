"""Question lists and answers as models write them (pure functions).

A question list may be numbered (`1.`, `1)`, `(1)`, `Q1:`, `Question 1:`), bulleted, in
bold, wrapped over lines, surrounded by prose ("Here are three questions:", "Let me know…"),
interleaved with answers, or a JSON array. When any line carries a list marker, the marked
items are the questions and unmarked lines are prose; otherwise the sentences ending in "?"
are, and failing those, lines that read as questions ("What is…", "Explain…"). A question
without a trailing "?" keeps its words; one that starts with an interrogative ("What is X")
gets its "?", an instruction ("Explain X.") stays as it is.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from exporter.synthesize.keys import normalize_question

_BULLET = r"[-*+•·‣▪◦–—]\s+"
_NUMBER = r"\(?\d{1,3}\s*[.):\]](?=\s|$)\s*"
_LETTER = r"\(?[a-hA-H]\)(?=\s)\s*"
_LABEL = r"(?:q(?:uestion)?)\s*#?\s*\d{0,3}\s*[:.)\-–]\s*"
_MARKER = re.compile(rf"^(?:{_BULLET}|{_NUMBER}|{_LETTER}|{_LABEL})", re.IGNORECASE)
_ANSWER_LABEL = re.compile(r"^(?:answer|a)\s*#?\s*\d{0,3}\s*:\s*", re.IGNORECASE)
_EMPHASIS = re.compile(r"\*\*|__|(?<!\w)\*(?=\S)|(?<=\S)\*(?!\w)|`")
_QUOTES = "\"'“”‘’«»"
_SENTENCE = re.compile(r"[^.!?:\n]*\?")
_INTERROGATIVES = frozenset({
    "what", "why", "how", "when", "where", "who", "whom", "whose", "which", "is", "are", "was",
    "were", "do", "does", "did", "can", "could", "should", "would", "will", "shall", "may",
    "might", "has", "have", "had", "according",
})
_IMPERATIVES = frozenset({
    "explain", "describe", "name", "list", "give", "identify", "summarize", "compare",
    "define", "outline",
})
MIN_QUESTION_CHARS = 5


@dataclass
class _Item:
    text: str
    marked: bool


def _clean_line(line: str) -> str:
    return _EMPHASIS.sub("", line).strip()


def _strip_markers(line: str) -> tuple[str, bool]:
    """The line without its list markers (a bullet may precede a `Q1:` label)."""
    marked = False
    while (match := _MARKER.match(line)) is not None and match.end() > 0:
        line, marked = line[match.end():].strip(), True
    return line, marked


def _is_answer(line: str) -> bool:
    return _ANSWER_LABEL.match(line) is not None


def _items(text: str) -> list[_Item]:
    items: list[_Item] = []
    last: _Item | None = None
    in_fence = False
    for raw in text.splitlines():
        line = _clean_line(raw)
        if line.startswith(("```", "~~~")):
            in_fence = not in_fence
            continue
        if not line or line.startswith("#"):
            last = None
            continue
        body, marked = _strip_markers(line)
        if _is_answer(body) or (not marked and _is_answer(line)):
            last = None
            continue
        if marked:
            last = _Item(body, True)
            items.append(last)
        elif last is not None and last.marked and not last.text.endswith(("?", ":")):
            last.text = f"{last.text} {line}".strip()  # a question wrapped over lines
        else:
            last = _Item(line, False)
            items.append(last)
    return items


def _first_word(text: str) -> str:
    return re.split(r"[\s,']", text.strip(_QUOTES).lower(), maxsplit=1)[0]


def _reads_as_question(text: str) -> bool:
    first = _first_word(text)
    return first in _INTERROGATIVES or first in _IMPERATIVES


def _finish(text: str) -> str | None:
    """A candidate as a question, or None when it isn't one (prose, a sub-heading)."""
    text = text.strip().strip(_QUOTES).strip()
    if "?" in text:
        text = text[: text.rindex("?") + 1]  # drop notes after the question
    elif text.endswith(":"):
        return None
    elif _first_word(text) in _INTERROGATIVES:
        text = text.rstrip(".;,! ") + "?"
    text = " ".join(text.split())
    if len(text) < MIN_QUESTION_CHARS or not any(c.isalpha() for c in text):
        return None
    return text


def _from_json(text: str) -> list[str] | None:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    if not stripped.startswith(("[", "{")):
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        return None
    if isinstance(value, dict):
        value = value.get("questions")
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _candidates(text: str) -> list[str]:
    from_json = _from_json(text)
    if from_json is not None:
        return from_json
    items = _items(text)
    marked = [item.text for item in items if item.marked]
    if marked:
        return marked
    prose = [item.text for item in items]
    asked = [m.group(0) for line in prose for m in _SENTENCE.finditer(line)]
    if asked:
        return asked
    return [line for line in prose if _reads_as_question(line)]


def parse_questions(text: str | None, limit: int | None = None) -> list[str]:
    """The questions of a model's answer, in order, without duplicates (equal after
    normalization), at most `limit` of them. Empty when there are none."""
    questions: list[str] = []
    seen: set[str] = set()
    for candidate in _candidates(text or ""):
        question = _finish(candidate)
        if question is None:
            continue
        key = normalize_question(question)
        if key and key not in seen:
            seen.add(key)
            questions.append(question)
    return questions[:limit] if limit is not None else questions


def parse_answer(text: str | None) -> str | None:
    """The answer's text without labels, quotes and code fences; None when nothing is left."""
    if text is None:
        return None
    lines = [line.strip() for line in text.strip().splitlines()
             if not line.strip().startswith(("```", "~~~"))]
    joined = "\n".join(lines).strip()
    labelled = re.search(r"(?im)^\**\s*(?:answer|a)\s*\d{0,3}\s*\**\s*:\s*\**", joined)
    if labelled is not None:
        joined = joined[labelled.end():]
    answer = " ".join(_EMPHASIS.sub("", joined).split()).strip(_QUOTES + " ")
    if not any(c.isalnum() for c in answer):
        return None
    return answer
