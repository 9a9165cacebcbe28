"""A synthesis run: documents in, pending question→answer items in the review queue out.

Per document: every chunk's state is read from the proxy's log (`state`), each chunk without
a question list gets one (one request), questions are deduplicated across the document's
chunks (questions done by an earlier run win, then chunk order), and each new question gets
one answer request grounded in its chunk. Each answer is recorded as a `revise` by reviewer
`synthesize` with the messages `[user: question, assistant: answer]`, which keeps the item
pending. Logged requests that are not pairs (question lists, failed attempts, duplicates
left by a run that died) are closed with a `reject` by `synthesize` that says why, so the
queue holds only the pairs.

Requests in flight are bounded by `concurrency`; admin calls (blocking `AdminClient`) run in
threads. A failure is reported per chunk with its reason and never stops the other chunks;
only a refused key or an unreachable server ends the run.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai
from rich.progress import Progress, TaskID

from exporter.synthesize.calls import CallFailed, ModelCaller, Sleep
from exporter.synthesize.chunking import Chunk, chunk_budget, chunk_documents
from exporter.synthesize.keys import (
    ANSWER_STEP_TAG,
    QUESTIONS_STEP_TAG,
    SYNTHETIC_TAG,
    checked_tag,
    chunk_tag,
    question_key,
    question_tag,
)
from exporter.synthesize.loader import Document
from exporter.synthesize.parse import parse_answer, parse_questions
from exporter.synthesize.state import REVIEWER, ChunkLog, LogReader
from exporter.synthesize.templates import Templates
from exporter.tokens import encoding_for, token_counter
from tuneloop.client import AdminClient
from tuneloop.errors import ConfigError, Conflict, NotFound, TuneloopError

T = TypeVar("T")
_ID = re.compile(r"^[0-9a-fA-F-]{1,64}$")


@dataclass(frozen=True)
class SynthOptions:
    model: str
    questions: int = 3
    tags: tuple[str, ...] = ()
    templates: Templates = field(default_factory=Templates)
    concurrency: int = 4
    retries: int = 4
    backoff_s: float = 0.5
    max_chunk_tokens: int | None = None
    ingest_wait_s: float = 30.0  # how long a logged item may take to become reviewable

    def __post_init__(self) -> None:
        for tag in self.tags:
            checked_tag(tag)
        if self.questions < 1 or self.concurrency < 1 or self.retries < 0:
            raise ConfigError("questions and concurrency must be at least 1, retries at least 0")


@dataclass(frozen=True)
class Failure:
    chunk: str  # the chunk's label: document and position
    key: str
    reason: str


@dataclass
class Summary:
    documents: int = 0
    chunks: int = 0
    chunks_skipped: int = 0  # done by an earlier run
    # of those, how many per (model, --tag values) of the earlier run that did them
    skipped_by: Counter[tuple[str, tuple[str, ...]]] = field(default_factory=Counter)
    chunks_repeated: int = 0  # same text (and templates) as another chunk of this run
    chunks_done: int = 0
    questions: int = 0  # new distinct questions this run answers
    duplicate_questions: int = 0  # new questions equal to another question of the document
    answers: int = 0  # pairs recorded by this run
    answers_completed: int = 0  # of those, answers logged by a run that died before recording
    closed: int = 0  # logged requests closed as not a pair (question lists, failed attempts)
    unclosed: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None

    @property
    def ok(self) -> bool:
        return not self.failures


def plan_chunks(documents: Sequence[Document],
                options: SynthOptions) -> tuple[list[list[Chunk]], int, int]:
    """The chunks of each document, minus chunks an earlier document of the run already has
    (same text, same templates); with the number of chunks and of those repeated ones."""
    counter = token_counter(encoding_for(options.model))
    template = max(counter.text(options.templates.questions),
                   counter.text(options.templates.answer))
    budget = chunk_budget(options.model, options.max_chunk_tokens, template)
    fingerprint = options.templates.fingerprint(options.questions)
    seen: set[str] = set()
    plan: list[list[Chunk]] = []
    total = 0
    for document in documents:
        chunks = chunk_documents([document], options.model, budget, fingerprint)
        total += len(chunks)
        fresh = [c for c in chunks if c.key not in seen]
        seen.update(c.key for c in fresh)
        if fresh:
            plan.append(fresh)
    return plan, total, total - sum(map(len, plan))


def _done_by(log: ChunkLog) -> tuple[str, tuple[str, ...]]:
    """The model and --tag values of the earlier run that did a chunk (its newest item)."""
    newest = max(log.items, key=lambda item: item.id, default=None)
    if newest is None:
        return "?", ()
    return newest.model or "?", tuple(sorted(newest.user_tags))


class Synthesizer:
    def __init__(self, options: SynthOptions, admin: AdminClient, client: openai.AsyncOpenAI,
                 *, send_key: bool, progress: Progress | None = None,
                 sleep: Sleep = asyncio.sleep):
        self.options = options
        self.admin = admin
        self.reader = LogReader(admin)
        self.caller = ModelCaller(client, options.model,
                                  semaphore=asyncio.Semaphore(options.concurrency),
                                  retries=options.retries, backoff_s=options.backoff_s,
                                  send_key=send_key, sleep=sleep)
        self.admin_slots = asyncio.Semaphore(max(4, options.concurrency))
        self.progress = progress
        self.task: TaskID | None = None
        self.summary = Summary()

    # -- the run ----------------------------------------------------------------------------
    def plan(self, documents: Sequence[Document]) -> list[list[Chunk]]:
        plan, total, repeated = plan_chunks(documents, self.options)
        self.summary.chunks += total
        self.summary.chunks_repeated += repeated
        return plan

    async def run(self, documents: Sequence[Document]) -> Summary:
        self.summary.documents = len(documents)
        plan = self.plan(documents)
        if self.progress is not None:
            self.task = self.progress.add_task("chunks", total=sum(map(len, plan)))
        await asyncio.gather(*(self._document(chunks) for chunks in plan))
        stats = self.caller.stats
        self.summary.requests, self.summary.retries = stats.requests, stats.retries
        self.summary.prompt_tokens = stats.prompt_tokens
        self.summary.completion_tokens = stats.completion_tokens
        self.summary.cost_usd = await self._cost(stats.interaction_ids)
        return self.summary

    async def _document(self, chunks: list[Chunk]) -> None:
        logs = await asyncio.gather(*(self._admin(self.reader.chunk_log, c.key) for c in chunks))
        lists = await asyncio.gather(*(self._questions(c, log) for c, log in zip(
            chunks, logs, strict=True)))
        seen = {key for log in logs for key in log.done}
        work = []
        for chunk, log, found in zip(chunks, logs, lists, strict=True):
            if found is None:
                self._advance()
                continue
            questions, asked_now = found
            todo: list[tuple[str, str]] = []
            for question in questions:
                key = question_key(question)
                if key in log.done:
                    continue
                if key in seen:
                    self.summary.duplicate_questions += asked_now
                else:
                    seen.add(key)
                    todo.append((question, key))
                    self.summary.questions += 1
            work.append(self._chunk_answers(chunk, log, todo, asked_now))
        await asyncio.gather(*work)

    # -- questions --------------------------------------------------------------------------
    def _tags(self, chunk: Chunk, step: str, *more: str) -> list[str]:
        return [SYNTHETIC_TAG, *self.options.tags, chunk.source_tag, chunk_tag(chunk.key), step,
                *more]

    async def _questions(self, chunk: Chunk, log: ChunkLog) -> tuple[list[str], bool] | None:
        """The chunk's question list: the newest logged one that parses, else a new one (and
        whether it is new)."""
        n = self.options.questions
        chosen: str | None = None
        questions: list[str] = []
        for item in log.questions:
            if item.ok and (questions := parse_questions(item.content, n)):
                chosen = item.id
                break
        for item in log.questions:
            if item.untouched and item.id != chosen:
                await self._close(item.id, "a question list superseded by another, or a failed "
                                  "attempt")
        if chosen is None:
            prompt = self.options.templates.questions_prompt(chunk.text, n, chunk.document.name)
            try:
                reply = await self.caller.chat(prompt, self._tags(chunk, QUESTIONS_STEP_TAG))
            except CallFailed as exc:
                await self._close_failed(exc.failed_ids)
                self._fail(chunk, f"asking for questions: {exc}")
                return None
            await self._close_failed(reply.failed_ids)
            questions = parse_questions(reply.content, n)
            if reply.interaction_id is None:
                self._fail(chunk, "the proxy sent no x-tuneloop-id (is logging off?)")
                return None
            chosen = reply.interaction_id
            if not questions:
                await self._close(chosen, "no question could be parsed from this answer")
                shown = " ".join((reply.content or "").split())[:120]
                self._fail(chunk, f"no question could be parsed from the model's answer "
                           f"{shown!r}")
                return None
        logged = next((item for item in log.questions if item.id == chosen), None)
        if logged is None or logged.untouched:
            await self._close(chosen, f"the question list of {chunk_tag(chunk.key)}; its "
                              "question→answer pairs are separate items")
        return questions, logged is None

    # -- answers ----------------------------------------------------------------------------
    async def _chunk_answers(self, chunk: Chunk, log: ChunkLog, todo: list[tuple[str, str]],
                             asked_now: bool) -> None:
        wanted = {key for _, key in todo} | set(log.done)
        for key, items in log.answers.items():
            if key not in wanted:
                for item in items:
                    if item.untouched:
                        await self._close(item.id, "an answer to a question that is not in "
                                          "the chunk's question list")
        if not todo:  # done before, or every question was another chunk's
            if asked_now:
                self.summary.chunks_done += 1
            else:
                self.summary.chunks_skipped += 1
                self.summary.skipped_by[_done_by(log)] += 1
            self._advance()
            return
        results = await asyncio.gather(*(self._answer(chunk, log, q, k) for q, k in todo))
        if all(results):
            self.summary.chunks_done += 1
        self._advance()

    async def _answer(self, chunk: Chunk, log: ChunkLog, question: str, key: str) -> bool:
        reuse: tuple[str, str] | None = None
        for item in log.answers.get(key, []):
            if not item.untouched:
                continue
            answer = parse_answer(item.content) if item.ok else None
            if reuse is None and answer is not None:
                reuse = (item.id, answer)
            else:
                await self._close(item.id, "a failed attempt or a duplicate of another answer")
        if reuse is not None:
            if await self._record(chunk, reuse[0], question, reuse[1]):
                self.summary.answers_completed += 1
                return True
            return False
        prompt = self.options.templates.answer_prompt(chunk.text, question, chunk.document.name)
        try:
            reply = await self.caller.chat(
                prompt, self._tags(chunk, ANSWER_STEP_TAG, question_tag(key)))
        except CallFailed as exc:
            await self._close_failed(exc.failed_ids)
            self._fail(chunk, f"answering {question!r}: {exc}")
            return False
        await self._close_failed(reply.failed_ids)
        if reply.interaction_id is None:
            self._fail(chunk, "the proxy sent no x-tuneloop-id (is logging off?)")
            return False
        answer = parse_answer(reply.content)
        if answer is None:
            await self._close(reply.interaction_id, "the answer could not be parsed")
            self._fail(chunk, f"answering {question!r}: the model's answer is empty "
                       f"(finish_reason {reply.finish_reason})")
            return False
        return await self._record(chunk, reply.interaction_id, question, answer)

    async def _record(self, chunk: Chunk, interaction_id: str, question: str,
                      answer: str) -> bool:
        messages = [{"role": "user", "content": question},
                    {"role": "assistant", "content": answer}]
        try:
            await self._review(interaction_id, "revise", messages=messages)
        except Conflict:
            item = await self._admin(self.admin.interaction, interaction_id)
            if any(r.get("reviewer") == REVIEWER and r.get("action") == "revise"
                   for r in item.get("revisions") or []):
                return True
            self._fail(chunk, f"answering {question!r}: {interaction_id} was reviewed before "
                       "synthesize could record the pair")
            return False
        except NotFound:
            self._fail(chunk, f"answering {question!r}: {interaction_id} did not appear in "
                       f"the log within {self.options.ingest_wait_s:g} s")
            return False
        self.summary.answers += 1
        return True

    # -- the review API ---------------------------------------------------------------------
    async def _admin(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async with self.admin_slots:
            return await asyncio.to_thread(fn, *args, **kwargs)

    async def _review(self, interaction_id: str, action: str, *,
                      messages: list[dict[str, Any]] | None = None,
                      reason: str | None = None) -> None:
        """One review action on a fresh item, once the proxy has ingested it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.ingest_wait_s
        delay = 0.02
        while True:
            try:
                await self._admin(self.admin.review, interaction_id, action, reviewer=REVIEWER,
                                  expected_revision=0, messages=messages, reason=reason)
                return
            except NotFound:
                if loop.time() >= deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(0.5, delay * 2)

    async def _close(self, interaction_id: str, reason: str) -> None:
        """Take a logged request that is not a pair out of the pending queue."""
        try:
            await self._review(interaction_id, "reject", reason=f"synthesize: {reason}")
            self.summary.closed += 1
        except Conflict:
            pass  # someone reviewed it already: theirs to keep
        except NotFound:
            self.summary.unclosed.append(interaction_id)

    async def _close_failed(self, ids: Sequence[str]) -> None:
        for interaction_id in ids:
            await self._close(interaction_id, "a failed attempt (retried)")

    def _fail(self, chunk: Chunk, reason: str) -> None:
        self.summary.failures.append(Failure(chunk.label, chunk.key, reason))

    def _advance(self) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task)

    async def _cost(self, ids: list[str]) -> float | None:
        """The cost the proxy logged for this run's answered requests (None when unknown)."""
        ids = [i for i in ids if _ID.match(i)]
        if not ids:
            return 0.0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(10.0, self.options.ingest_wait_s)
        while True:
            found, cost = 0, None
            try:
                for start in range(0, len(ids), 500):
                    result = await self._admin(self.admin.usage, ids[start:start + 500])
                    total = result["cost_usd"]
                    found += result["logged"]
                    cost = total if cost is None else cost + (total or 0)
            except TuneloopError:
                return None
            if found >= len(ids) or loop.time() >= deadline:
                return None if cost is None else float(cost)
            await asyncio.sleep(0.1)
