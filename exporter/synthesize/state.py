"""What earlier runs left behind, read from the proxy's log through the admin API.

The proxy owns all state: every request of a run is logged with the tags `chunk:<key>`,
`synthesize:questions` or `synthesize:answer`, and for answers `q:<question key>`; a pair is
done once its answer item carries a `revise` revision by the reviewer `synthesize`. So a
chunk's state is one listing, `GET /admin/interactions?tag=chunk:<key>&traffic=synthetic`:

- its question lists (newest first; the newest that parses is the chunk's question list,
  so a rerun asks again only when none does);
- per question key, its answer items, and whether one of them is done.

A run that died half-way through a chunk left logged items without a revision; the next run
completes them (an answer already logged is revised, not asked again) and closes the extra
ones (failed attempts, duplicates) with a `reject` by `synthesize`, so nothing is duplicated
in the review queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exporter.synthesize.keys import (
    ANSWER_STEP_TAG,
    QUESTIONS_STEP_TAG,
    SYNTHETIC_TAG,
    chunk_tag,
    question_key,
)
from tuneloop.client import AdminClient

REVIEWER = "synthesize"
PAGE = 200


@dataclass
class Logged:
    """One logged request of a synthesis run, with its review state."""

    id: str
    step: str | None  # "questions" | "answer" | None (not ours)
    question_key: str | None
    ok: bool  # answered 200 and completed
    content: str | None  # the assistant's text as logged
    review: str | None
    revision: int
    reviewed_by: str | None
    pair_key: str | None  # question key of the current messages when they are a Q→A pair
    model: str | None = None  # the model the request asked for
    user_tags: tuple[str, ...] = ()  # the run's --tag values (not synthesize's own tags)

    @property
    def untouched(self) -> bool:
        return self.revision == 0


@dataclass
class ChunkLog:
    questions: list[Logged] = field(default_factory=list)  # newest first
    answers: dict[str, list[Logged]] = field(default_factory=dict)  # newest first
    done: dict[str, str] = field(default_factory=dict)  # question key -> answer item id

    @property
    def items(self) -> list[Logged]:
        return [*self.questions, *(a for group in self.answers.values() for a in group)]


def _content(response: Any) -> str | None:
    if not isinstance(response, dict):
        return None
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


def _pair_key(item: dict[str, Any]) -> str | None:
    messages = item.get("messages")
    if not item.get("edited") or not isinstance(messages, list) or len(messages) != 2:
        return None
    user, answer = messages
    if not (isinstance(user, dict) and isinstance(answer, dict)
            and user.get("role") == "user" and answer.get("role") == "assistant"
            and isinstance(user.get("content"), str)):
        return None
    return question_key(user["content"])


def logged_from(item: dict[str, Any]) -> Logged:
    tags = item.get("logged_tags") or item.get("tags") or []
    step = ("questions" if QUESTIONS_STEP_TAG in tags
            else "answer" if ANSWER_STEP_TAG in tags else None)
    question_key = next((t[2:] for t in tags if t.startswith("q:")), None)
    return Logged(
        id=item["id"], step=step, question_key=question_key,
        ok=item.get("status_code") == 200 and item.get("finish") in (None, "completed"),
        content=_content(item.get("response")), review=item.get("review"),
        revision=int(item.get("revision") or 0), reviewed_by=item.get("reviewed_by"),
        pair_key=_pair_key(item),
        model=item.get("model") if isinstance(item.get("model"), str) else None,
        user_tags=tuple(t for t in tags if not _own_tag(t)),
    )


def _own_tag(tag: str) -> bool:
    """A tag synthesize adds itself (not one of the run's --tag values)."""
    return tag in (SYNTHETIC_TAG, QUESTIONS_STEP_TAG, ANSWER_STEP_TAG) \
        or tag.startswith(("chunk:", "q:", "src:"))


class LogReader:
    """Reads chunk states through the admin API (blocking; run it in a thread)."""

    def __init__(self, admin: AdminClient):
        self.admin = admin

    def items(self, key: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = self.admin.interactions(tag=chunk_tag(key), traffic="synthetic",
                                           limit=PAGE, cursor=cursor)
            # the list answers previews: an item cut there (a long question list) is read whole
            found.extend(self.admin.interaction(i["id"]) if i.get("truncated") else i
                         for i in page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return found

    def synthesized(self, item: Logged) -> bool:
        """Whether `synthesize` recorded the pair on this answer item."""
        if item.untouched:
            return False
        if item.pair_key is not None and item.pair_key == item.question_key:
            return True  # the pair is there, whoever reviewed it since
        if item.reviewed_by == REVIEWER:
            return False  # our last action was a reject: we never reject what we revised
        revisions = self.admin.interaction(item.id).get("revisions") or []
        return any(r.get("reviewer") == REVIEWER and r.get("action") == "revise"
                   for r in revisions)

    def chunk_log(self, key: str) -> ChunkLog:
        log = ChunkLog()
        for item in sorted(map(logged_from, self.items(key)), key=lambda i: i.id, reverse=True):
            if item.step == "questions":
                log.questions.append(item)
            elif item.step == "answer" and item.question_key is not None:
                log.answers.setdefault(item.question_key, []).append(item)
                if item.question_key not in log.done and self.synthesized(item):
                    log.done[item.question_key] = item.id
        return log
