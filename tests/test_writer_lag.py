"""The ingest lag the proxy reports (healthz, metrics): the age of the oldest record spooled
and not yet ingested. Under steady traffic the spool is never empty after an ingest; the lag
must still restart from the records that arrived meanwhile, not grow for ever."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pyarrow as pa

from storage.db import Connection
from storage.spool import Spool
from storage.store import migrate_store, open_store
from storage.writer import LogWriter
from tests.test_ingest_refused import record


def test_the_lag_counts_from_the_oldest_record_not_yet_ingested(tmp_path: Path) -> None:
    db = open_store(tmp_path / "t.duckdb")
    migrate_store(db)
    spool = Spool(tmp_path / "spool", max_bytes=1_000_000)
    arrived: list[float] = []

    async def run() -> tuple[float, float]:
        writer: LogWriter

        def meanwhile(con: Connection, batch: pa.Table) -> None:
            if not arrived:  # a request logged while the first batch is being ingested
                arrived.append(time.time())
                writer.log(record(2))

        writer = LogWriter(db, spool, hooks=[meanwhile])
        assert writer.ingest_lag_seconds() == 0.0
        writer.log(record(1))
        await asyncio.sleep(0.05)
        assert writer.ingest_lag_seconds() > 0
        await writer.ingest_pending()  # record 1 in; record 2 waits in the spool
        lag, bound = writer.ingest_lag_seconds(), time.time() - arrived[0]
        await writer.ingest_pending()
        assert writer.ingest_lag_seconds() == 0.0
        return lag, bound

    try:
        lag, bound = asyncio.run(run())
    finally:
        db.close()
    assert 0 < lag <= bound  # record 2's age, not record 1's


def test_the_last_ingest_error_is_cleared_by_a_success(tmp_path: Path) -> None:
    """/healthz says "degraded" while `last_error` is set: a recovered store must clear it."""
    db = open_store(tmp_path / "t.duckdb")
    migrate_store(db)
    spool = Spool(tmp_path / "spool", max_bytes=1_000_000)

    async def run() -> tuple[str | None, str | None]:
        writer = LogWriter(db, spool, interval_s=0.01)
        writer.inject_failure(0.3)
        writer.log(record(1))
        writer.start()
        while writer.stats.last_error is None:  # the injected fault, seen once at least
            await asyncio.sleep(0.01)
        failed = writer.stats.last_error
        while writer.stats.ingested == 0:  # the fault is over: the record goes in
            await asyncio.sleep(0.01)
        await writer.close()
        return failed, writer.stats.last_error

    try:
        failed, after = asyncio.run(run())
    finally:
        db.close()
    assert failed is not None and "injected" in failed
    assert after is None
