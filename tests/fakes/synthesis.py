"""The fake's answers to the two prompts of `tuneloop synthesize` (the founding article's).

A prompt asking to "Write N questions that can be answered with the article content" gets N
questions about the article's words, written in one of several messy shapes (numbered,
parenthesized with preamble prose and blank lines, `Q1:` labels with answers, bullets without
"?", duplicates, bold and wrapped, a JSON array). The shape is chosen by a hash of the
article, or named in it with ``FAKE-SHAPE:<name>``. Whatever the shape, the questions a
correct parser finds are :func:`questions_for`.

A prompt asking to answer "by providing 1-2 sentences extracted from the article" gets the
article's first sentence that mentions the question's topic (:func:`answer_for`), sometimes
labelled or quoted. An article containing ``FAKE-NO-QUESTIONS`` gets prose without questions;
one containing ``FAKE-EMPTY-ANSWER`` gets a blank answer. Any other prompt: None (the chat
fake then echoes as usual).
"""

from __future__ import annotations

import hashlib
import json
import re

QUESTIONS_ASK = re.compile(
    r"Write (\d+) questions that can be answered with the article content", re.IGNORECASE)
ANSWER_ASK = "by providing 1-2 sentences extracted from the article"
SHAPES = ("numbered", "preamble", "labels", "bullets", "duplicates", "bold", "json")
_SHAPE_MARK = re.compile(r"FAKE-SHAPE:(\w+)")
_WORD = re.compile(r"[A-Za-z][A-Za-z]{4,}")
_STOP = frozenset({"about", "which", "there", "their", "these", "those", "would", "could",
                   "should", "article", "other", "where", "while", "above", "below", "shape",
                   "questions", "question", "every", "after", "before", "being"})
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def topics(article: str) -> list[str]:
    seen: dict[str, str] = {}
    for word in _WORD.findall(article):
        lowered = word.lower()
        if lowered not in _STOP and not lowered.startswith("fake") and lowered not in seen:
            seen[lowered] = word
    return list(seen.values())


def questions_for(article: str, n: int) -> list[str]:
    """The questions the fake asks about `article` (what a parser must find)."""
    words = topics(article) or ["this"]
    return [f"What does the article say about {words[i % len(words)]}?"
            + ("" if i < len(words) else f" (part {i // len(words) + 1})")
            for i in range(n)]


def shape_of(article: str) -> str:
    named = _SHAPE_MARK.search(article)
    if named is not None and named.group(1) in SHAPES:
        return named.group(1)
    return SHAPES[_digest(article) % len(SHAPES)]


def question_list(article: str, n: int) -> str:
    if "FAKE-NO-QUESTIONS" in article:
        return "I'm sorry, but this text doesn't contain enough information for questions."
    qs = questions_for(article, n)
    shape = shape_of(article)
    if shape == "numbered":
        return "\n".join(f"{i}. {q}" for i, q in enumerate(qs, 1))
    if shape == "preamble":
        items = "\n\n".join(f"{i}) {q}" for i, q in enumerate(qs, 1))
        preamble = f"Sure! Here are {n} questions based on the article:"
        return f"{preamble}\n\n{items}\n\nI hope these help."
    if shape == "labels":
        return "\n".join(f"Q{i}: {q}\nA{i}: See the article." for i, q in enumerate(qs, 1))
    if shape == "bullets":
        return "\n".join(f"{'-*'[i % 2]} {q.rstrip('?')}" if "(" not in q else f"- {q}"
                         for i, q in enumerate(qs))
    if shape == "duplicates":
        again = qs[0].lower().rstrip("?") + " ?!"
        lines = [f"{i}. {q}" for i, q in enumerate([qs[0], again, *qs[1:]], 1)]
        return "Questions:\n" + "\n".join(lines)
    if shape == "bold":  # each question wrapped after "say"
        wrapped = [q.replace(" say ", " say\n", 1) for q in qs]
        return "**Questions**\n\n" + "\n".join(f"**{i}.** {q}" for i, q in enumerate(wrapped, 1))
    return json.dumps(qs)


def answer_for(article: str, question: str) -> str:
    """The sentence the fake answers `question` with (what a parser must find)."""
    topic = question.removeprefix("What does the article say about ").split("?")[0].strip()
    sentences = [s.strip().lstrip("#").strip() for s in _SENTENCES.split(article) if s.strip()]
    sentences = [s for s in sentences if not s.startswith("###")] or ["It does not say."]
    return next((s for s in sentences if topic.lower() in s.lower()), sentences[0])


def answer_text(article: str, question: str) -> str:
    if "FAKE-EMPTY-ANSWER" in article:
        return "  \n "
    answer = answer_for(article, question)
    style = _digest(question) % 3
    return answer if style == 0 else f"Answer: {answer}" if style == 1 else f'"{answer}"'


def synthesis_reply(prompt: str) -> str | None:
    """The fake's answer to a synthesize prompt, or None for any other prompt."""
    asked = QUESTIONS_ASK.search(prompt)
    if asked is not None:
        article = prompt[:asked.start()].rsplit("###", 1)[0].strip()
        return question_list(article, int(asked.group(1)))
    at = prompt.find(ANSWER_ASK)
    if at >= 0:
        article = prompt[:at].rsplit("###", 1)[0].strip()
        question = prompt.rsplit("Question:", 1)[-1].strip()
        return answer_text(article, question)
    return None
