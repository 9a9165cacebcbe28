"""Compacting the database file: deleted rows leave their bytes in DuckDB's free blocks (a
`strings` of the file after `CHECKPOINT` still shows a forgotten user's prompts). Compacting
copies every table, sequence and view into a new file (`COPY FROM DATABASE`), checks that
every table has the same number of rows, and swaps the new file in atomically (`os.replace`);
the old file's bytes go with it.

The file must not be open anywhere else: `tuneloop compact` runs this directly only when no
server holds the file; a running server runs it on its writer thread with every connection
closed (see `Database.compact`).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from tuneloop.errors import DatabaseInUse, StorageError

_SOURCE = "current"
_TARGET = "compacted"

POSTGRES_COMPACT = (
    "compact rewrites a DuckDB file; this store is Postgres, where deleted rows are gone "
    "from queries at once and their space is reclaimed by autovacuum. To rewrite the "
    "tables without their bytes, a database administrator runs VACUUM FULL (it locks each "
    "table while it runs; old bytes may stay in WAL segments and backups until they expire)")


@dataclass(frozen=True)
class CompactResult:
    bytes_before: int
    bytes_after: int
    tables: dict[str, int]  # rows per table, equal before and after
    seconds: float

    def to_json(self) -> dict[str, object]:
        return {"bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
                "tables": self.tables, "seconds": round(self.seconds, 3)}


def _row_counts(con: duckdb.DuckDBPyConnection, catalog: str) -> dict[str, int]:
    tables = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = ? AND "
        "table_schema = 'main' AND table_type = 'BASE TABLE' ORDER BY 1", [catalog]
    ).fetchall()
    return {name: int(con.execute(f'SELECT count(*) FROM "{catalog}".main."{name}"'
                                  ).fetchall()[0][0]) for (name,) in tables}


def _objects(con: duckdb.DuckDBPyConnection, catalog: str) -> dict[str, int]:
    """How many sequences, views and indexes the catalog holds (the copy must hold as many)."""
    return {
        "sequences": con.execute("SELECT count(*) FROM duckdb_sequences() WHERE "
                                 "database_name = ?", [catalog]).fetchall()[0][0],
        "views": con.execute("SELECT count(*) FROM duckdb_views() WHERE database_name = ? "
                             "AND NOT internal", [catalog]).fetchall()[0][0],
        "indexes": con.execute("SELECT count(*) FROM duckdb_indexes() WHERE "
                               "database_name = ?", [catalog]).fetchall()[0][0],
    }


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def compact_file(path: Path) -> CompactResult:
    """Rewrite the database file at `path` without its free blocks (see the module doc)."""
    started = time.perf_counter()
    if not path.is_file():
        raise StorageError(f"no database file at {path}")
    fresh = path.with_name(f".{path.name}.compact-{os.getpid()}")
    for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
        leftover.unlink(missing_ok=True)
    wal = path.with_name(path.name + ".wal")
    try:
        con = duckdb.connect(":memory:")
        con.execute("SET enable_progress_bar = false")  # no bar on the server's stdout
    except duckdb.Error as exc:  # pragma: no cover - an in-memory database always opens
        raise StorageError(f"cannot start compacting: {exc}") from exc
    try:
        try:
            con.execute(f"ATTACH '{_quoted(path)}' AS {_SOURCE}")
        except duckdb.ResourceInUseException as exc:  # open in this very process
            raise DatabaseInUse(f"{path} is open in this process: compact through the admin "
                                "API") from exc
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise DatabaseInUse(f"{path} is held by another process (a running server "
                                    "compacts through its admin API)") from exc
            raise StorageError(f"cannot compact {path}: {exc}") from exc
        con.execute(f"CHECKPOINT {_SOURCE}")  # the WAL's changes into the file first
        before = _row_counts(con, _SOURCE)
        objects = _objects(con, _SOURCE)
        bytes_before = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        con.execute(f"ATTACH '{_quoted(fresh)}' AS {_TARGET}")
        con.execute(f"COPY FROM DATABASE {_SOURCE} TO {_TARGET}")
        con.execute(f"CHECKPOINT {_TARGET}")
        after = _row_counts(con, _TARGET)
        if after != before or _objects(con, _TARGET) != objects:
            raise StorageError(f"compacting {path} did not copy everything: rows {before} "
                               f"became {after}; the original file is unchanged")
        con.execute(f"DETACH {_TARGET}")
        con.execute(f"DETACH {_SOURCE}")
    except BaseException:
        con.close()
        for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
            leftover.unlink(missing_ok=True)
        raise
    con.close()
    fresh.chmod(0o600)
    _fsync(fresh)
    os.replace(fresh, path)  # atomic: the old file, free blocks and all, is gone
    with contextlib.suppress(FileNotFoundError):
        wal.unlink()  # checkpointed above: holds nothing the new file lacks
    fresh.with_name(fresh.name + ".wal").unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return CompactResult(bytes_before, path.stat().st_size, after,
                         time.perf_counter() - started)


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")
