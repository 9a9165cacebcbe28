"""The check after `migrate-store` copied a table: is every SOURCE row in the destination, as it
is in the source?

Replicas may already serve a Postgres destination while the copy runs (they are told to
reload routes and keys when it ends), and the rows they write there meanwhile are theirs to
keep: they are counted as rows the destination has beyond the source, not as a difference.
First each side's row count and order-independent checksum (storage.transfer_read.table_sum);
when they differ, a digest of every row on each side (the same on both backends) is compared
as a multiset in an in-memory DuckDB (8 bytes a row, only then): the source rows missing from
the destination are counted, and a few of them named by their key.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from storage.db import Connection
from storage.store import Store
from storage.transfer_read import TableSpec, TableSum, read_batches, row_digests, table_sum
from storage.transfer_rows import batch_row, row_label

EXAMPLES = 3


@dataclass(frozen=True)
class TableCheck:
    table: str
    source: TableSum
    dest: TableSum
    missing: int = 0
    """Source rows the destination doesn't hold as they are in the source."""
    examples: tuple[str, ...] = ()
    """A few of those rows, by key."""

    @property
    def ok(self) -> bool:
        return self.missing == 0

    @property
    def beyond(self) -> int:
        """Rows the destination has beyond the source (written there during the copy)."""
        return self.dest.rows - (self.source.rows - self.missing)


def _digest_batches(con: Connection, spec: TableSpec, batch_rows: int) -> Iterator[pa.Table]:
    for batch in read_batches(con, spec, batch_rows=batch_rows, ordered=False):
        yield pa.table({"d": pa.array(row_digests(batch), pa.uint64())})


def _load(store: Store, spec: TableSpec, batch_rows: int, into: duckdb.DuckDBPyConnection,
          table: str) -> None:
    into.execute(f"CREATE TABLE {table} (d UBIGINT)")

    def run(con: Connection) -> None:
        for batch in _digest_batches(con, spec, batch_rows):
            into.register("tl_batch", batch)
            into.execute(f"INSERT INTO {table} SELECT d FROM tl_batch")
            into.unregister("tl_batch")

    store.read_sync(run)


def _examples(source: Store, spec: TableSpec, wanted: set[int], batch_rows: int
              ) -> tuple[str, ...]:
    def run(con: Connection) -> tuple[str, ...]:
        found: list[str] = []
        for batch in read_batches(con, spec, batch_rows=batch_rows, ordered=False):
            for index, digest in enumerate(row_digests(batch)):
                if digest in wanted:
                    found.append(row_label(spec, batch_row(batch, index)))
                    if len(found) >= len(wanted):
                        return tuple(found)
        return tuple(found)

    return source.read_sync(run)


def check_table(source: Store, dest: Store, spec: TableSpec, batch_rows: int) -> TableCheck:
    summing = functools.partial(table_sum, spec=spec, batch_rows=batch_rows)
    source_sum, dest_sum = source.read_sync(summing), dest.read_sync(summing)
    if source_sum == dest_sum:
        return TableCheck(spec.name, source_sum, dest_sum)
    with duckdb.connect() as digests:
        _load(source, spec, batch_rows, digests, "src")
        _load(dest, spec, batch_rows, digests, "dst")
        digests.execute("CREATE TABLE missing AS SELECT d FROM src EXCEPT ALL SELECT d FROM dst")
        missing = int(digests.execute("SELECT count(*) FROM missing").fetchall()[0][0])
        wanted = {int(r[0]) for r in digests.execute(
            f"SELECT DISTINCT d FROM missing LIMIT {EXAMPLES}").fetchall()}
    examples = _examples(source, spec, wanted, batch_rows) if wanted else ()
    return TableCheck(spec.name, source_sum, dest_sum, missing, examples)
