"""The two prompts, as templates. The defaults follow the founding article: the document,
then `###`, then the instruction.

Placeholders (each replaced in one pass, so text from a document is never re-expanded):
`{chunk}` the chunk's text, `{n}` the number of questions, `{question}` the question to
answer (answer template only), `{source}` the document's name. Any other brace is literal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from exporter.synthesize.keys import sha
from tuneloop.errors import ConfigError

DEFAULT_QUESTIONS_TEMPLATE = (
    "{chunk}\n\n###\nGiven the article above. Write {n} questions that can be answered with "
    "the article content."
)
DEFAULT_ANSWER_TEMPLATE = (
    "{chunk}\n\n###\nGiven the article above. Answer the question below by providing 1-2 "
    "sentences extracted from the article.\n\nQuestion: {question}"
)
_PLACEHOLDER = re.compile(r"\{(chunk|n|question|source)\}")
_REQUIRED = {"questions": ("chunk", "n"), "answer": ("chunk", "question")}


def render(template: str, **values: str) -> str:
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _check(kind: str, template: str, origin: str) -> str:
    found = set(_PLACEHOLDER.findall(template))
    missing = [f"{{{name}}}" for name in _REQUIRED[kind] if name not in found]
    if missing:
        raise ConfigError(f"the {kind} template ({origin}) lacks {', '.join(missing)}")
    if kind == "questions" and "question" in found:
        raise ConfigError(f"the questions template ({origin}) can't use {{question}}")
    return template


@dataclass(frozen=True)
class Templates:
    questions: str = DEFAULT_QUESTIONS_TEMPLATE
    answer: str = DEFAULT_ANSWER_TEMPLATE

    def __post_init__(self) -> None:
        _check("questions", self.questions, "given")
        _check("answer", self.answer, "given")

    @classmethod
    def from_files(cls, questions: Path | None, answer: Path | None) -> Templates:
        def read(path: Path | None, kind: str, default: str) -> str:
            if path is None:
                return default
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read the {kind} template {path}: {exc}") from exc
            return _check(kind, text.rstrip("\n"), str(path))

        return cls(read(questions, "questions", DEFAULT_QUESTIONS_TEMPLATE),
                   read(answer, "answer", DEFAULT_ANSWER_TEMPLATE))

    def fingerprint(self, questions: int) -> str:
        """What a chunk's key depends on besides its text."""
        return sha("tuneloop-synthesize-v1", self.questions, self.answer, str(questions))

    def questions_prompt(self, chunk: str, n: int, source: str) -> str:
        return render(self.questions, chunk=chunk, n=str(n), source=source)

    def answer_prompt(self, chunk: str, question: str, source: str) -> str:
        return render(self.answer, chunk=chunk, question=question, source=source)
