"""Copying a whole store into another one (DuckDB file ↔ Postgres): `tuneloop migrate-store`.

    transfer = Transfer(source, dest, source_label="...")
    plan = transfer.prepare()       # refuses a destination holding other data
    transfer.copy(plan)             # resumes where a previous run of the same transfer stopped
    checks = transfer.verify(plan)  # rows and a checksum per table, on both sides

Both stores are at the latest schema (storage.store.migrate_store) before. The source is only
read. Tables are copied in TABLE_ORDER (what a row refers to comes before it), each in its
primary-key order (every column for a table without one, e.g. search_terms), in batches: each
batch is inserted together with the count of rows done in `_store_transfer` on the destination,
in ONE destination transaction. A run killed at any point therefore leaves batches that are
either wholly in (and counted) or wholly out, and the next run starts each table after the
rows counted (`OFFSET`, on the same order): every row is copied exactly once, a table without
a primary key included. Inserts also say `ON CONFLICT DO NOTHING` where a key exists.

The destination must be empty of user data, or hold a previous run of the same transfer: the
same source, whose tables still have the row counts recorded when the transfer started (a
source that changed in between is refused: start again into an empty store). Sequences
(route_history_seq, cycle_steps_seq) are moved past the copied maxima, and replicas already
serving a Postgres destination are told to reload routes and keys (storage.notify). The
search index is copied like any table (it is derived from interactions, but rebuilding it
costs more than copying it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from storage.backend import is_postgres, staged
from storage.backend.dialect import table_exists
from storage.db import Connection
from storage.notify import TOPICS, notify
from storage.store import Store
from storage.transaction import transaction
from storage.transfer_read import (
    TableSpec,
    TableSum,
    column_list,
    count_rows,
    quote,
    read_batches,
    table_spec,
    table_sum,
    user_tables,
)
from tuneloop.errors import TransferRefused

RECORD = "_store_transfer"
STAGE = "tl_transfer_batch"

TABLE_ORDER = (
    "interactions", "forgotten_users", "api_keys", "routes", "route_history",
    "reviews", "review_revisions", "review_claims", "interaction_tags", "feedback",
    "untrainable", "datasets", "dataset_items", "finetune_jobs", "finetune_job_events",
    "eval_runs", "cycle_runs", "cycle_steps", "cycle_leases",
    "prompt_templates", "search_docs", "search_terms", "search_words", "search_pending",
)
"""Referenced tables first (tables not listed, added later, come after, by name)."""

SEQUENCES = {"route_history_seq": ("route_history", "seq"),
             "cycle_steps_seq": ("cycle_steps", "seq")}
"""Each sequence and the column it numbers: set past that column's maximum after the copy."""

Progress = Callable[[str, int, int], None]
"""Called with (table, rows done, rows in the source table) as batches are committed."""


@dataclass(frozen=True)
class PlannedTable:
    spec: TableSpec
    source_rows: int
    rows_done: int


@dataclass(frozen=True)
class TableCheck:
    table: str
    source: TableSum
    dest: TableSum

    @property
    def ok(self) -> bool:
        return self.source == self.dest


def ordered(tables: Iterable[str]) -> list[str]:
    rank = {name: n for n, name in enumerate(TABLE_ORDER)}
    return sorted(tables, key=lambda t: (rank.get(t, len(rank)), t))


class Transfer:
    def __init__(self, source: Store, dest: Store, *, source_label: str,
                 batch_rows: int = 5000):
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        self.source, self.dest = source, dest
        self.source_label = source_label
        self.batch_rows = batch_rows

    # -- what to copy, and where a previous run stopped -------------------------------------
    def prepare(self) -> list[PlannedTable]:
        """The tables to copy with the rows already copied; starts the record on a fresh
        destination. Raises TransferRefused for a destination with other data."""
        source = self.source.read_sync(self._source_tables)
        dest_tables = set(self.dest.read_sync(user_tables))
        missing = [s.name for s, _ in source if s.name not in dest_tables]
        if missing:
            raise TransferRefused(f"the destination has no table {', '.join(missing)}: is it "
                                  "at an older schema than the source?")
        done = self.dest.write_sync(lambda con: self._start_atomically(con, source))
        return [PlannedTable(spec, rows, done[spec.name]) for spec, rows in source]

    def _source_tables(self, con: Connection) -> list[tuple[TableSpec, int]]:
        return [(table_spec(con, t), count_rows(con, t)) for t in ordered(user_tables(con))]

    def _start_atomically(self, con: Connection,
                          source: list[tuple[TableSpec, int]]) -> dict[str, int]:
        with transaction(con):  # the record with all its rows, or none of it
            return self._start(con, source)

    def _start(self, con: Connection, source: list[tuple[TableSpec, int]]) -> dict[str, int]:
        if table_exists(con, RECORD):
            return self._resume(con, source)
        filled = [(s.name, n) for s, _ in source if (n := count_rows(con, s.name))]
        if filled:
            listing = ", ".join(f"{name} ({rows} rows)" for name, rows in filled[:5])
            raise TransferRefused(
                f"the destination already holds data: {listing}. migrate-store copies into an "
                "empty store only (or resumes its own unfinished copy): create an empty "
                "database or choose a new file")
        con.execute(f"CREATE TABLE {RECORD} (table_name VARCHAR PRIMARY KEY, source VARCHAR "
                    "NOT NULL, source_rows BIGINT NOT NULL, rows_done BIGINT NOT NULL, "
                    "started_at TIMESTAMPTZ NOT NULL, finished_at TIMESTAMPTZ)")
        now = datetime.now(UTC)
        for spec, rows in source:
            con.execute(f"INSERT INTO {RECORD} VALUES (?, ?, ?, 0, ?, NULL)",
                        [spec.name, self.source_label, rows, now])
        return {spec.name: 0 for spec, _ in source}

    def _resume(self, con: Connection, source: list[tuple[TableSpec, int]]) -> dict[str, int]:
        rows = con.execute(f"SELECT table_name, source, source_rows, rows_done FROM {RECORD}"
                           ).fetchall()
        record = {str(r[0]): (str(r[1]), int(r[2]), int(r[3])) for r in rows}
        labels = {label for label, _, _ in record.values()}
        if labels != {self.source_label}:
            raise TransferRefused(
                f"the destination holds a copy (finished or not) of {', '.join(sorted(labels))}"
                f", not of {self.source_label}: copy into an empty store instead")
        changed = [f"{s.name} ({record[s.name][1] if s.name in record else 'no'} rows then, "
                   f"{n} now)" for s, n in source
                   if s.name not in record or record[s.name][1] != n]
        if changed:
            raise TransferRefused(
                "the source changed since this copy started: " + ", ".join(changed[:5]) +
                ". Stop whatever writes to the source and copy again into an empty store")
        return {name: done for name, (_, _, done) in record.items()}

    # -- copying -------------------------------------------------------------------------
    def copy(self, plan: list[PlannedTable], progress: Progress | None = None) -> None:
        for table in plan:
            self.copy_table(table, progress)
        self.dest.write_sync(self._finish)

    def copy_table(self, table: PlannedTable, progress: Progress | None = None) -> None:
        spec, total = table.spec, table.source_rows
        done = table.rows_done
        if progress:
            progress(spec.name, done, total)
        if done >= total:
            return

        def run(con: Connection) -> None:
            nonlocal done
            for batch in read_batches(con, spec, skip=done, batch_rows=self.batch_rows):
                self.dest.write_sync(functools.partial(self._insert, spec=spec, batch=batch))
                done += batch.num_rows
                if progress:
                    progress(spec.name, done, total)

        self.source.read_sync(run)
        self.dest.write_sync(lambda con: con.execute(
            f"UPDATE {RECORD} SET finished_at = ? WHERE table_name = ?",
            [datetime.now(UTC), spec.name]))

    def _insert(self, con: Connection, spec: TableSpec, batch: Any) -> None:
        names = column_list(spec.columns)
        conflict = " ON CONFLICT DO NOTHING" if spec.key else ""
        with transaction(con), staged(con, STAGE, batch, like=spec.name):
            con.execute(f"INSERT INTO {quote(spec.name)} ({names}) "
                        f"SELECT {names} FROM {STAGE}{conflict}")
            con.execute(f"UPDATE {RECORD} SET rows_done = rows_done + ? WHERE table_name = ?",
                        [batch.num_rows, spec.name])

    def _finish(self, con: Connection) -> None:
        """Sequences past the copied numbers; replicas already serving the destination reload
        the routes and keys now copied (at commit)."""
        for topic in TOPICS:
            notify(con, topic)
        for sequence, (table, column) in SEQUENCES.items():
            if not table_exists(con, table):
                continue
            row = con.execute(f"SELECT max({quote(column)}) FROM {quote(table)}").fetchone()
            if row and row[0] is not None:
                advance_sequence(con, sequence, int(row[0]))

    # -- checking ------------------------------------------------------------------------
    def verify(self, plan: list[PlannedTable],
               progress: Callable[[str], None] | None = None) -> list[TableCheck]:
        checks = []
        for table in plan:
            if progress:
                progress(table.spec.name)
            summing = functools.partial(table_sum, spec=table.spec, batch_rows=self.batch_rows)
            source = self.source.read_sync(summing)
            dest = self.dest.read_sync(summing)
            checks.append(TableCheck(table.spec.name, source, dest))
        return checks


def advance_sequence(con: Connection, name: str, past: int) -> None:
    """Make the sequence's next value larger than `past` (never moving it back)."""
    if is_postgres(con):
        con.execute("SELECT setval(?, greatest(?, (SELECT last_value FROM "
                    f"{quote(name)})))", [name, past])
        return
    row = con.execute("SELECT last_value FROM duckdb_sequences() WHERE sequence_name = ?",
                      [name]).fetchone()
    last = int(row[0]) if row and row[0] is not None else 0
    if past > last:  # DuckDB can't set a sequence: draw the values up to `past`
        con.execute(f"SELECT max(nextval('{name}')) FROM range(?)", [past - last])
