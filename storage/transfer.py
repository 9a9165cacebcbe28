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
same source, whose rows already copied are unchanged. Each batch also records a digest of the
rows copied so far (storage.transfer_read.BatchDigest); a resume reads the source's first
`rows_done` rows of each table again and refuses the source when their digest differs (a row
copied before was changed or deleted, or one was inserted among them: start again into an
empty store). Rows beyond those are copied as they are now, and the final check compares every
row anyway. Sequences (route_history_seq, cycle_steps_seq) are moved past the copied maxima,
and replicas already serving a Postgres destination are told to reload routes and keys
(storage.notify); the rows they write meanwhile stay, and the check counts them as beyond the
source (storage.transfer_verify). A row that can't be read or written stops the copy with its
table, key and reason (storage.transfer_rows). The search index is copied like any table (it
is derived from interactions, but rebuilding it costs more than copying it).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from storage.backend import DATABASE_ERRORS, is_postgres, staged
from storage.backend.dialect import table_exists
from storage.db import Connection
from storage.notify import TOPICS, notify
from storage.online_indexes import build_indexes
from storage.search_vectors import build_vectors
from storage.store import Store
from storage.transaction import transaction
from storage.transfer_read import (
    CHECKSUM_MOD,
    BatchDigest,
    TableSpec,
    column_list,
    count_rows,
    quote,
    read_batches,
    table_spec,
    user_tables,
)
from storage.transfer_rows import first_unwritable, refused, refused_batch, unreadable
from storage.transfer_verify import TableCheck, check_table
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

SOURCE_WINS = frozenset({"search_words"})
"""Tables whose source row replaces one a replica wrote first during the copy: a word's row
names the first interaction it was seen in, which is the source's (older) one."""

Progress = Callable[[str, int, int], None]
"""Called with (table, rows done, rows in the source table) as batches are committed."""


@dataclass(frozen=True)
class PlannedTable:
    spec: TableSpec
    source_rows: int
    rows_done: int
    digest: int | None = 0
    """Of the rows done (BatchDigest); None for a copy an older version started."""


@dataclass(frozen=True)
class Recorded:
    source_rows: int
    rows_done: int
    digest: int | None


__all__ = ["PlannedTable", "TableCheck", "Transfer", "advance_sequence", "ordered"]


def ordered(tables: Iterable[str]) -> list[str]:
    rank = {name: n for n, name in enumerate(TABLE_ORDER)}
    return sorted(tables, key=lambda t: (rank.get(t, len(rank)), t))


class Transfer:
    def __init__(self, source: Store, dest: Store, *, source_label: str,
                 batch_rows: int = 5000, dest_label: str = "the destination"):
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        self.source, self.dest = source, dest
        self.source_label, self.dest_label = source_label, dest_label
        self.batch_rows = batch_rows
        self.to_postgres = bool(dest.read_sync(is_postgres))

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
        self._refuse_changed_copied_rows(source, done)
        self.dest.write_sync(lambda con: self._record_totals(con, source))
        return [PlannedTable(spec, rows, done[spec.name].rows_done, done[spec.name].digest)
                for spec, rows in source]

    def _refuse_changed_copied_rows(self, source: list[tuple[TableSpec, int]],
                                    done: dict[str, Recorded]) -> None:
        """The source's first `rows_done` rows of each table must be those copied: same
        digest (a copy started by an older version, without digests: same row counts)."""
        changed = []
        digest = BatchDigest()
        try:
            for spec, rows in source:
                record = done[spec.name]
                if record.digest is None:
                    if record.source_rows != rows:
                        changed.append(f"{spec.name} ({record.source_rows} rows then, "
                                       f"{rows} now)")
                elif record.rows_done and self._digest_of_first(
                        spec, record.rows_done, digest) != record.digest:
                    changed.append(f"{spec.name} (among its first {record.rows_done:,} "
                                   "rows, already copied)")
        finally:
            digest.close()
        if changed:
            raise TransferRefused(
                "the source changed since this copy started: " + ", ".join(changed[:5]) +
                ". Stop whatever writes to the source and copy again into an empty store")

    def _record_totals(self, con: Connection, source: list[tuple[TableSpec, int]]) -> None:
        """The source's row counts now (a resume copies the source as it is now)."""
        with transaction(con):
            for spec, rows in source:
                con.execute(f"UPDATE {RECORD} SET source_rows = ? WHERE table_name = ?",
                            [rows, spec.name])

    def _digest_of_first(self, spec: TableSpec, rows: int, digest: BatchDigest) -> int:
        def run(con: Connection) -> tuple[int, int]:
            total = seen = 0
            for batch in read_batches(con, spec, batch_rows=self.batch_rows, limit=rows):
                total, seen = (total + digest(batch)) % CHECKSUM_MOD, seen + batch.num_rows
            return total, seen

        total, seen = self.source.read_sync(run)
        return total if seen == rows else -1  # fewer rows now: never a recorded digest

    def _source_tables(self, con: Connection) -> list[tuple[TableSpec, int]]:
        return [(table_spec(con, t), count_rows(con, t)) for t in ordered(user_tables(con))]

    def _start_atomically(self, con: Connection,
                          source: list[tuple[TableSpec, int]]) -> dict[str, Recorded]:
        with transaction(con):  # the record with all its rows, or none of it
            return self._start(con, source)

    def _start(self, con: Connection, source: list[tuple[TableSpec, int]]
               ) -> dict[str, Recorded]:
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
                    "started_at TIMESTAMPTZ NOT NULL, finished_at TIMESTAMPTZ, "
                    "copied_digest VARCHAR)")
        now = datetime.now(UTC)
        for spec, rows in source:
            con.execute(f"INSERT INTO {RECORD} VALUES (?, ?, ?, 0, ?, NULL, '0')",
                        [spec.name, self.source_label, rows, now])
        return {spec.name: Recorded(rows, 0, 0) for spec, rows in source}

    def _resume(self, con: Connection, source: list[tuple[TableSpec, int]]
                ) -> dict[str, Recorded]:
        if "copied_digest" not in table_spec(con, RECORD).columns:  # an older version's
            con.execute(f"ALTER TABLE {RECORD} ADD COLUMN copied_digest VARCHAR")
        rows = con.execute(f"SELECT table_name, source, source_rows, rows_done, copied_digest "
                           f"FROM {RECORD}").fetchall()
        labels = {str(r[1]) for r in rows}
        if labels != {self.source_label}:
            raise TransferRefused(
                f"the destination holds a copy (finished or not) of {', '.join(sorted(labels))}"
                f", not of {self.source_label}: copy into an empty store instead")
        record = {str(r[0]): Recorded(int(r[2]), int(r[3]), None if r[4] is None else int(r[4]))
                  for r in rows}
        new = [s.name for s, _ in source if s.name not in record]
        if new:
            raise TransferRefused(
                f"the source has tables this copy didn't start with: {', '.join(new[:5])}. "
                "Copy again into an empty store")
        return record

    # -- copying -------------------------------------------------------------------------
    def copy(self, plan: list[PlannedTable], progress: Progress | None = None) -> None:
        for table in plan:
            self.copy_table(table, progress)
        self.dest.write_sync(self._finish)
        if self.to_postgres:  # outside a transaction (CREATE INDEX CONCURRENTLY)
            self.dest.read_sync(analyzed)

    def copy_table(self, table: PlannedTable, progress: Progress | None = None) -> None:
        spec, total = table.spec, table.source_rows
        done, copied = table.rows_done, table.digest
        if progress:
            progress(spec.name, done, total)
        if done >= total:
            return
        digest = BatchDigest()

        def run(con: Connection) -> None:
            nonlocal done, copied
            batches = read_batches(con, spec, skip=done, batch_rows=self.batch_rows)
            with contextlib.closing(batches):  # its cursor and snapshot, on any exit
                while True:
                    try:
                        batch = next(batches, None)
                    except DATABASE_ERRORS as exc:
                        raise unreadable(con, spec, done, exc, self.source_label) from exc
                    if batch is None:
                        return
                    if copied is not None:
                        copied = (copied + digest(batch)) % CHECKSUM_MOD
                    self._write(spec, batch, copied)
                    done += batch.num_rows
                    if progress:
                        progress(spec.name, done, total)

        try:
            self.source.read_sync(run)
        finally:
            digest.close()
        self.dest.write_sync(lambda con: con.execute(
            f"UPDATE {RECORD} SET finished_at = ? WHERE table_name = ?",
            [datetime.now(UTC), spec.name]))

    def _write(self, spec: TableSpec, batch: Any, copied: int | None) -> None:
        """One batch and its count (and the digest of the rows done with it), or nothing and
        TransferRowRefused naming the first row the destination can't take."""
        if self.to_postgres and (bad := first_unwritable(batch)) is not None:
            raise refused(spec, batch, bad.row, bad.why, self.dest_label)
        try:
            self.dest.write_sync(functools.partial(self._insert, spec=spec, batch=batch,
                                                   copied=copied))
        except DATABASE_ERRORS as exc:
            raise refused_batch(spec, batch, exc, functools.partial(self._try, spec),
                                self.dest_label) from exc

    def _try(self, spec: TableSpec, rows: Any) -> None:
        """Insert `rows` and roll back: raises the database's error if it refuses them."""
        class Undo(Exception):
            pass

        def run(con: Connection) -> None:
            with transaction(con):
                self._insert_rows(con, spec, rows)
                raise Undo

        with contextlib.suppress(Undo):
            self.dest.write_sync(run)

    def _insert_rows(self, con: Connection, spec: TableSpec, batch: Any) -> None:
        names = column_list(spec.columns)
        conflict = " ON CONFLICT DO NOTHING" if spec.key else ""
        if spec.name in SOURCE_WINS and spec.key:
            others = [c for c in spec.columns if c not in spec.key]
            conflict = (f" ON CONFLICT ({column_list(spec.key)}) DO UPDATE SET " +
                        ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in others))
        with staged(con, STAGE, batch, like=spec.name):
            con.execute(f"INSERT INTO {quote(spec.name)} ({names}) "
                        f"SELECT {names} FROM {STAGE}{conflict}")

    def _insert(self, con: Connection, spec: TableSpec, batch: Any,
                copied: int | None) -> None:
        with transaction(con):
            self._insert_rows(con, spec, batch)
            con.execute(f"UPDATE {RECORD} SET rows_done = rows_done + ?, copied_digest = ? "
                        "WHERE table_name = ?",
                        [batch.num_rows, None if copied is None else str(copied), spec.name])

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
        """Per table: every source row is in the destination, identical (rows there beyond
        the source's, written by replicas meanwhile, are counted, not a difference)."""
        checks = []
        for table in plan:
            if progress:
                progress(table.spec.name)
            checks.append(check_table(self.source, self.dest, table.spec, self.batch_rows))
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


def analyzed(con: Connection) -> None:
    """Postgres after a copy: the search vectors finished (storage.search_vectors), the
    online indexes built (storage.online_indexes), and the planner's statistics gathered
    (autovacuum would, later: search plans by them)."""
    build_vectors(con)
    build_indexes(con)
    con.execute("ANALYZE")
