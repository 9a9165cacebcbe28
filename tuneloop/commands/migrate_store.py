"""`tuneloop migrate-store --from SPEC --to SPEC`: copy a whole store (DuckDB file or
postgresql:// URL, either way), resumable, then check every table on both sides."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from tuneloop.commands.common import domain_errors, err_console
from tuneloop.errors import TransferMismatch


class RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} rows/s", style="progress.data.speed")


@dataclass
class Timing:
    """Rows copied by this run per table, and when its first and last batches landed."""
    started: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    first: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)

    def saw(self, table: str, done: int) -> None:
        now = time.perf_counter()
        if table not in self.started:
            self.started[table], self.first[table] = now, done
        self.ended[table], self.last[table] = now, done

    def copied(self, table: str) -> int:
        return self.last.get(table, 0) - self.first.get(table, 0)

    def seconds(self, table: str) -> float:
        return self.ended.get(table, 0.0) - self.started.get(table, 0.0)


def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f}" if seconds > 0 and rows else "-"


@click.command("migrate-store")
@click.option("--from", "source", required=True, metavar="SPEC",
              help="The store to copy: a DuckDB file or a postgresql:// URL (only read).")
@click.option("--to", "dest", required=True, metavar="SPEC",
              help="An empty store (DuckDB file or postgresql:// URL), or one holding an "
              "unfinished copy of the same source, which is resumed.")
@click.option("--batch-rows", type=click.IntRange(1), default=5000, show_default=True,
              help="Rows per batch (each batch is one destination transaction).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
@domain_errors
def migrate_store(source: str, dest: str, batch_rows: int, quiet: bool) -> None:
    """Copy every table of a store into another (DuckDB → Postgres, or back), each row
    exactly once; run it again after an interruption to continue. Stop the servers on the
    source first. Prints rows/s per table and a count + checksum check of every table."""
    from storage.transfer import Transfer
    from storage.transfer_stores import exclusively, label, transfer_stores

    out = Console(quiet=quiet, highlight=False)
    timing = Timing()
    with transfer_stores(source, dest) as (src, dst):
        transfer = Transfer(src, dst, source_label=label(source), batch_rows=batch_rows,
                            dest_label=label(dest))

        def run() -> None:
            plan = transfer.prepare()
            resumed = sum(t.rows_done for t in plan)
            if resumed:
                out.print(f"resuming: {resumed:,} rows were copied by an earlier run")
            progress = Progress(TextColumn("{task.description:<22}"), BarColumn(),
                                MofNCompleteColumn(), RowsPerSecond(), TimeElapsedColumn(),
                                console=err_console, disable=quiet)
            tasks: dict[str, TaskID] = {}

            def advance(table: str, done: int, total: int) -> None:
                timing.saw(table, done)
                if table not in tasks:
                    tasks[table] = progress.add_task(table, total=total, completed=done)
                progress.update(tasks[table], completed=done)

            begin = time.perf_counter()
            with progress:
                transfer.copy(plan, advance)
            elapsed = time.perf_counter() - begin
            copied = sum(timing.copied(t.spec.name) for t in plan)
            out.print(f"copied {copied:,} rows in {elapsed:.1f} s "
                      f"({_rate(copied, elapsed)} rows/s) from {label(source)} to {label(dest)}")
            with err_console.status("verifying") if not quiet else contextlib.nullcontext():
                checks = transfer.verify(plan)
            summary = Table("table", "source rows", "dest rows", "source rows in dest",
                            "beyond source", "copied now", "rows/s", title="verification")
            for check, table in zip(checks, plan, strict=True):
                name = table.spec.name
                summary.add_row(name, f"{check.source.rows:,}", f"{check.dest.rows:,}",
                                "all" if check.ok else f"{check.missing:,} MISSING",
                                f"{check.beyond:,}" if check.beyond else "",
                                f"{timing.copied(name):,}",
                                _rate(timing.copied(name), timing.seconds(name)))
            out.print(summary)
            bad = [c for c in checks if not c.ok]
            if bad:
                raise TransferMismatch(
                    "the destination lacks source rows (or holds them changed): " + "; ".join(
                        f"{c.table}: {c.missing:,} rows" +
                        (f", e.g. ({'), ('.join(c.examples)})" if c.examples else "")
                        for c in bad[:5]) +
                    ". Did something write to the source, or change those rows in the "
                    "destination, meanwhile? Start again into an empty store")
            beyond = sum(c.beyond for c in checks)
            out.print("verified: every source row is in the destination, identical "
                      "(count and checksum per table)" + (
                          f"; {beyond:,} rows the destination has beyond the source "
                          "(written there during the copy)" if beyond else ""))

        exclusively(dst, run)

