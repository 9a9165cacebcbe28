"""`tuneloop synthesize`: question→answer pairs from documents, into the review queue.

    tuneloop synthesize --docs articles/ --questions 3 --model gpt-4o-mini --tag synthetic:blog

Every request goes through the proxy at `--api` as synthetic traffic; the pairs wait in the
review queue as pending items. A rerun skips the chunks that are done, so an interrupted or
partly failed run is finished by running it again. Exit status 1 when any chunk failed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

if TYPE_CHECKING:
    import openai

    from exporter.synthesize.chunking import Chunk
    from exporter.synthesize.runner import Summary
    from tuneloop.config import Settings

MAX_FAILURES_SHOWN = 50


def _summary_lines(summary: Summary) -> list[str]:
    cost = "unknown" if summary.cost_usd is None else f"${summary.cost_usd:.6f}"
    rows = [
        ("documents", f"{summary.documents}"),
        ("chunks", f"{summary.chunks} ({summary.chunks_done} done now, {summary.chunks_skipped} "
                   f"done before, {summary.chunks_repeated} repeated text)"),
        ("questions", f"{summary.questions} new ({summary.duplicate_questions} duplicates "
                      "dropped)"),
        ("answers", f"{summary.answers} pairs recorded ({summary.answers_completed} completed "
                    "from an interrupted run)"),
        ("failures", f"{len(summary.failures)}"),
        ("requests", f"{summary.requests} ({summary.retries} retries)"),
        ("tokens", f"{summary.prompt_tokens + summary.completion_tokens} "
                   f"({summary.prompt_tokens} prompt, {summary.completion_tokens} completion)"),
        ("cost", cost),
        ("closed", f"{summary.closed} logged requests that are not pairs (rejected by "
                   "synthesize)"),
    ]
    return [f"{name:<10} {value}" for name, value in rows]


def _skipped_lines(summary: Summary, model: str, tags: tuple[str, ...]) -> list[str]:
    """What a rerun skipped and why: the chunks done before, by which model and tags, and,
    when this run names others, that a chunk is done once whatever the model or tags."""
    if not summary.chunks_skipped:
        return []
    def described(run_model: str, run_tags: tuple[str, ...]) -> str:
        return f"model {run_model}, " + (f"tags {', '.join(run_tags)}" if run_tags
                                          else "no --tag")

    now = (model, tuple(sorted(set(tags))))
    lines = [f"skipped {summary.chunks_skipped} chunks done by an earlier run (not asked "
             "again): " + "; ".join(f"{n} by {described(*by)}"
                                     for by, n in summary.skipped_by.most_common())]
    if any(by != now for by in summary.skipped_by):
        lines.append(f"this run asks {described(*now)}, but a chunk is done once whatever "
                     "--model or --tag: its key covers its text, the prompt templates and "
                     "--questions. To make pairs with other settings, change --questions or a "
                     "template (--question-template/--answer-template).")
    return lines


@click.command("synthesize")
@click.option("--docs", required=True, help="A folder, a glob, a file (Markdown, text, HTML) "
              "or a JSONL file with a `text` field.")
@click.option("--questions", "questions", type=click.IntRange(1, 50), default=3,
              show_default=True, help="Questions to ask for per chunk.")
@click.option("--model", default="gpt-4o-mini", show_default=True,
              help="Model (or alias) the proxy sends both prompts to.")
@click.option("--tag", "tags", multiple=True, help="Tag for every request (repeatable), "
              "e.g. synthetic:blog.")
@click.option("--api", default=None, help="Proxy base URL "
              "[env TUNELOOP_API; default http://127.0.0.1:4000].")
@click.option("--api-key", default=None, help="Key sent to the proxy's /v1 [default: "
              "OPENAI_API_KEY, else none and the proxy uses its own upstream key].")
@click.option("--concurrency", type=click.IntRange(1, 256), default=4, show_default=True,
              help="Model requests in flight.")
@click.option("--retries", type=click.IntRange(0, 20), default=4, show_default=True,
              help="Retries of a request on 429, 5xx, timeouts and dropped connections.")
@click.option("--question-template", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None, help="Questions prompt; placeholders {chunk} "
              "{n} [{source}].")
@click.option("--answer-template", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None, help="Answer prompt; placeholders {chunk} "
              "{question} [{source}].")
@click.option("--max-chunk-tokens", type=click.IntRange(64, 1_000_000), default=None,
              help="Largest chunk in tokens [default 3000, less if the model's context "
              "needs it].")
@click.option("--dry-run", is_flag=True, help="Only show the documents and chunks.")
@click.pass_context
def synthesize(ctx: click.Context, docs: str, questions: int, model: str, tags: tuple[str, ...],
               api: str | None, api_key: str | None, concurrency: int, retries: int,
               question_template: Path | None, answer_template: Path | None,
               max_chunk_tokens: int | None, dry_run: bool) -> None:
    """Make question→answer pairs from documents, as the founding article did, and leave them
    pending in the review queue (resumable: a rerun skips finished chunks)."""
    from tuneloop.commands.common import domain_errors

    @domain_errors
    def run() -> None:
        _run(ctx, docs=docs, questions=questions, model=model, tags=tags, api=api,
             api_key=api_key, concurrency=concurrency, retries=retries,
             question_template=question_template, answer_template=answer_template,
             max_chunk_tokens=max_chunk_tokens, dry_run=dry_run)

    run()


def _run(ctx: click.Context, *, docs: str, questions: int, model: str, tags: tuple[str, ...],
         api: str | None, api_key: str | None, concurrency: int, retries: int,
         question_template: Path | None, answer_template: Path | None,
         max_chunk_tokens: int | None, dry_run: bool) -> None:
    from exporter.synthesize.loader import load_documents
    from exporter.synthesize.runner import Synthesizer, SynthOptions, plan_chunks
    from exporter.synthesize.templates import Templates
    from tuneloop.client import AdminClient
    from tuneloop.commands.common import admin_token, settings_from

    settings = settings_from(ctx)
    err = Console(stderr=True)
    base = (api or settings.api).rstrip("/")
    key = api_key or (settings.openai_api_key.get_secret_value()
                      if settings.openai_api_key else None)
    options = SynthOptions(
        model=model, questions=questions, tags=tags, concurrency=concurrency, retries=retries,
        templates=Templates.from_files(question_template, answer_template),
        max_chunk_tokens=max_chunk_tokens,
    )
    documents = load_documents(docs)
    if dry_run:
        _show_plan(plan_chunks(documents, options)[0])
        return
    with AdminClient(base, admin_token(settings), actor="synthesize") as admin:
        admin.interactions(limit=1, traffic="synthetic")  # fail early: server, token

        async def main() -> Summary:
            client = _client(base, key, settings)
            progress = Progress(TextColumn("synthesize"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=err, transient=False)
            try:
                with progress:
                    return await Synthesizer(options, admin, client, send_key=key is not None,
                                             progress=progress).run(documents)
            finally:
                await client.close()

        summary = asyncio.run(main())
    _report(err, summary, _skipped_lines(summary, model, tags))


def _client(base: str, key: str | None, settings: Settings) -> openai.AsyncOpenAI:
    import openai

    return openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=key or "unused", max_retries=0,
                              timeout=settings.read_timeout_s)


def _show_plan(plan: list[list[Chunk]]) -> None:
    table = Table("document", "chunk", "tokens", "tag", "key")
    for chunks in plan:
        for chunk in chunks:
            table.add_row(chunk.document.name, f"{chunk.index + 1}/{chunk.count}",
                          str(chunk.tokens), chunk.source_tag, f"chunk:{chunk.key}")
    Console().print(table)


def _report(err: Console, summary: Summary, skipped: list[str]) -> None:
    for line in [*_summary_lines(summary), *skipped]:
        err.print(line, highlight=False, markup=False, soft_wrap=True)
    for failure in summary.failures[:MAX_FAILURES_SHOWN]:
        err.print(f"[bold red]failed:[/] {escape(failure.chunk)} (chunk:{failure.key}): "
                  f"{escape(failure.reason)}", highlight=False, soft_wrap=True)
    if len(summary.failures) > MAX_FAILURES_SHOWN:
        err.print(f"… and {len(summary.failures) - MAX_FAILURES_SHOWN} more failures")
    if summary.unclosed:
        err.print(f"{len(summary.unclosed)} logged requests could not be closed (not in the "
                  f"log in time): {', '.join(summary.unclosed[:10])}")
    if not summary.ok:
        err.print("some chunks failed; run the same command again to retry them")
        sys.exit(1)
