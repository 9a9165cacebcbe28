"""File modes: what tuneloop writes holds users' prompts, so it is owner-only (0600 files in
0700 folders) whatever umask the process inherited. Checked by stat()ing the real files of a
real `tuneloop serve` and of a real `tuneloop export`."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai

from storage.spool import QUARANTINE_FILE, Spool
from tests.conftest import FakeUpstream, ProxyServer
from tests.proc import ProxyProcess
from tests.test_export_cli import review_all, run_cli
from tests.test_review_api import logged


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """The permissive umask most systems start processes with (so the test can fail)."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_serve_creates_database_wal_spool_and_token_owner_only(
    tmp_path: Path, fake_openai: FakeUpstream
) -> None:
    folder = tmp_path / "data"  # does not exist yet: serve creates it
    db = folder / "tuneloop.duckdb"
    # no admin token: serve writes one beside the database; a long ingest interval keeps the
    # interaction in the spool's active file until the forget call below ingests it
    env = {"TUNELOOP_INGEST_INTERVAL_MS": "600000"}
    with umask(0o022):
        proc = ProxyProcess(db, fake_openai.base_url, env, log_path=tmp_path / "serve.log")
        proc.start()
    try:
        client = openai.OpenAI(base_url=proc.url + "/v1", api_key="k", max_retries=0)
        client.chat.completions.create(model="gpt-4o-mini",
                                       messages=[{"role": "user", "content": "hello"}])
        spool = folder / "tuneloop.duckdb.spool"
        active = list(spool.glob("active-*.jsonl"))
        assert active, "the interaction should wait in the spool"
        spool_file = mode(active[0])
        token_file = folder / "tuneloop.duckdb.admin-token"
        token = token_file.read_text().strip()
        # forget ingests the spool first: a commit, so DuckDB writes its WAL
        answer = httpx.post(proc.url + "/admin/forget", json={"user": "nobody"},
                            headers={"authorization": f"Bearer {token}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        wal = folder / "tuneloop.duckdb.wal"
        assert wal.exists(), "no WAL after a commit: nothing to check"
        found = {
            "folder": mode(folder), "database": mode(db), "wal": mode(wal),
            "spool folder": mode(spool), "spool file": spool_file,
            "admin token": mode(token_file),
        }
    finally:
        proc.stop()
    assert found == {"folder": 0o700, "database": 0o600, "wal": 0o600,
                     "spool folder": 0o700, "spool file": 0o600, "admin token": 0o600}


def test_an_existing_database_and_spool_are_made_private_at_start(tmp_path: Path) -> None:
    """Files left 0644 by an older version are repaired when the server opens them."""
    from storage.db import connect

    db = tmp_path / "old.duckdb"
    with umask(0o022):
        connect(db).close()
        db.chmod(0o644)
        spool_dir = tmp_path / "old.spool"
        spool_dir.mkdir(mode=0o755)
        connect(db).close()
        Spool(spool_dir, 1 << 20)
    assert mode(db) == 0o600
    assert mode(spool_dir) == 0o700


def test_quarantine_file_is_owner_only(tmp_path: Path) -> None:
    with umask(0o022):
        spool = Spool(tmp_path / "spool", 1 << 20)
        spool.quarantine({"id": "x", "user_id": "u"}, "refused")
        assert mode(tmp_path / "spool" / QUARANTINE_FILE) == 0o600
        spool.quarantine({"id": "y", "user_id": "v"}, "refused")
        spool.drop_quarantined(lambda record: record.get("user_id") == "u")
    assert mode(tmp_path / "spool" / QUARANTINE_FILE) == 0o600


def test_export_files_are_owner_only_in_owner_only_folders(proxy: ProxyServer,
                                                           tmp_path: Path) -> None:
    ids = logged(proxy, *(f"How do I change my address, case {n}?" for n in range(18)))
    review_all(proxy, ids)
    root = tmp_path / "exports"  # created by the export
    out = root / "support-v1"
    with umask(0o022):
        result = run_cli(proxy, tmp_path, "export", "--name", "support", "--format", "chat",
                         "--validation", "0.2", "--out", str(out))
    assert result.exit_code == 0, result.output
    files = {p.name: mode(p) for p in out.iterdir()}
    assert files and set(files.values()) == {0o600}, files
    assert (mode(root), mode(out)) == (0o700, 0o700)
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")], "work dir left"

