"""The worker process for ingest's Python work: the same search index as in-process, nothing
lost when the worker dies, and no worker left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from storage.compute_worker import ComputeWorker
from storage.db import Database
from storage.migrations import migrate
from storage.queue import ReviewQuery, find_ids
from storage.records import insert_interactions, to_arrow
from storage.search_index import SearchIndexer, index_batch


def rows(start: int, count: int) -> list[dict[str, Any]]:
    out = []
    for k in range(start, start + count):
        endpoint = ["chat.completions", "completions", "responses", "embeddings"][k % 4]
        request: dict[str, Any] = {
            "chat.completions": {"messages": [{"role": "user", "content": f"refund order{k}"}]},
            "completions": {"prompt": f"invoice number{k}\n\n###\n\n"},
            "responses": {"input": [{"role": "user", "content": [
                {"type": "input_text", "text": f"shipping parcel{k}"}]}]},
            "embeddings": {"input": f"vector{k}"},
        }[endpoint]
        response = {"choices": [{"index": 0, "message": {"role": "assistant",
                                                         "content": f"answer{k}"},
                                 "text": f" answer{k}"}],
                    "output": [{"type": "message", "role": "assistant",
                                "content": [{"type": "output_text", "text": f"answer{k}"}]}]}
        out.append({"id": f"{0x01900000 + k:08x}-0000-7000-8000-000000000000",
                    "created_at": 1_700_000_000_000_000 + k, "endpoint": endpoint,
                    "model": "m", "traffic": "production", "status_code": 200,
                    "request": orjson.dumps(request).decode(),
                    "response": orjson.dumps(response).decode(), "tags": []})
    return out


@pytest.fixture
def worker() -> Iterator[ComputeWorker]:
    compute_worker = ComputeWorker()
    yield compute_worker
    compute_worker.close()


def load(path: Path, batches: list[pa.Table], hook: Any) -> Database:
    db = Database(path)
    db.write_sync(migrate)

    def run(con: Any) -> None:
        for batch in batches:
            insert_interactions(con, batch)
            hook(con, batch)

    db.write_sync(run)
    return db


def index_rows(db: Database) -> tuple[list[Any], list[Any]]:
    con = db.cursor()
    docs = con.execute("SELECT interaction_id, list_sort(term_keys) FROM search_docs "
                       "ORDER BY 1").fetchall()
    terms = con.execute("SELECT term_key, interaction_id FROM search_terms "
                        "ORDER BY 1, 2").fetchall()
    return docs, terms


def test_the_worker_builds_the_same_index_as_in_process(tmp_path: Path,
                                                        worker: ComputeWorker) -> None:
    batches = [to_arrow(rows(0, 120)), to_arrow(rows(120, 30)), to_arrow(rows(0, 120))]
    indexer = SearchIndexer(worker, min_rows=50)
    in_worker = load(tmp_path / "w.duckdb", batches, indexer)
    in_process = load(tmp_path / "p.duckdb", batches, index_batch)
    assert indexer.rows_to_worker == 240 and indexer.rows_here == 30  # the small batch: here
    assert worker.calls == 2 and worker.failures == 0
    docs, terms = index_rows(in_worker)
    assert (docs, terms) == index_rows(in_process)
    assert len(docs) == sum(k % 4 != 3 for k in range(150))  # no embeddings, no replay twice
    hits = find_ids(in_worker.cursor(), ReviewQuery(q="parcel2"), limit=5)[0]
    assert hits == [f"{0x01900002:08x}-0000-7000-8000-000000000000"]
    in_worker.close()
    in_process.close()


def cjk_rows(start: int, count: int) -> list[dict[str, Any]]:
    texts = ["パスワードをリセットしたい", "忘记密码了怎么办", "비밀번호를 잊어버렸어요",
             "ลืมรหัสผ่าน", "Ｆｕｌｌ－ｗｉｄｔｈ REFUNDS"]
    out = rows(start, count)
    for k, row in enumerate(out):
        text = f"{texts[k % len(texts)]} 注文{start + k}"
        row["endpoint"] = "chat.completions"
        row["request"] = orjson.dumps({"messages": [
            {"role": "system", "content": "返金は請求チームが担当します"},
            {"role": "user", "content": text}]}).decode()
        row["response"] = orjson.dumps({"choices": [{"index": 0, "message": {
            "role": "assistant", "content": f"答え{start + k} refunded"}}]}).decode()
    return out


def test_the_worker_indexes_cjk_text_like_the_process(tmp_path: Path,
                                                     worker: ComputeWorker) -> None:
    batches = [to_arrow(cjk_rows(0, 80)), to_arrow(cjk_rows(80, 10))]
    indexer = SearchIndexer(worker, min_rows=50)
    in_worker = load(tmp_path / "w.duckdb", batches, indexer)
    in_process = load(tmp_path / "p.duckdb", batches, index_batch)
    assert indexer.rows_to_worker == 80 and worker.failures == 0

    def index(db: Database) -> list[Any]:
        con = db.cursor()
        return [con.execute(sql).fetchall() for sql in (
            "SELECT term_key, interaction_id, fields FROM search_terms ORDER BY ALL",
            "SELECT interaction_id, term_keys, term_fields FROM search_docs ORDER BY 1",
            "SELECT word, term_key, interaction_id FROM search_words ORDER BY 1")]

    assert index(in_worker) == index(in_process)
    for q, expected in (("パスワード", 18), ("密码", 18), ("비밀번호", 18), ("รหัส", 18),
                        ("full refund", 18), ("注文42", 1), ("返金", 0)):
        hits = find_ids(in_worker.cursor(), ReviewQuery(q=q), limit=100)[0]
        assert len(hits) == expected, q
    in_worker.close()
    in_process.close()


def test_a_dead_worker_loses_nothing_and_is_replaced(tmp_path: Path) -> None:
    worker = ComputeWorker(retry_after_s=1.0)
    indexer = SearchIndexer(worker, min_rows=50)
    db = load(tmp_path / "w.duckdb", [to_arrow(rows(0, 100))], indexer)
    first = worker.worker_pid()
    assert first is not None and first != os.getpid()
    os.kill(first, signal.SIGKILL)
    time.sleep(0.2)

    def more(start: int) -> None:
        def run(con: Any) -> None:
            batch = to_arrow(rows(start, 100))
            insert_interactions(con, batch)
            indexer(con, batch)

        db.write_sync(run)

    more(100)  # the dead worker had it: indexed here
    assert worker.failures == 1 and worker.worker_pid() is None
    more(200)  # within retry_after_s: here too, no new worker yet
    assert worker.worker_pid() is None
    time.sleep(1.1)
    more(300)  # then a new worker
    second = worker.worker_pid()
    assert second not in (None, first) and worker.failures == 1
    count = db.cursor().execute("SELECT count(*) FROM search_docs").fetchall()[0][0]
    assert count == 400 * 3 // 4
    db.close()
    worker.close()


def test_close_stops_the_worker(worker: ComputeWorker, tmp_path: Path) -> None:
    indexer = SearchIndexer(worker, min_rows=50)
    load(tmp_path / "w.duckdb", [to_arrow(rows(0, 60))], indexer).close()
    pid = worker.worker_pid()
    assert pid is not None
    worker.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)
    batch = to_arrow(rows(60, 60))  # after close, the work runs in-process
    assert indexer.forward_index(batch).docs.num_rows == 45
    assert worker.worker_pid() is None and worker.failures == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child (exited, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_worker_leaves_when_the_server_is_killed() -> None:
    """A `kill -9` of the server must not leave the worker behind (it gets no signal)."""
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER_WITH_A_WORKER], stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[1])
    assert server.stdout is not None
    pid = int(server.stdout.readline())
    assert _alive(pid)
    server.kill()
    server.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)


SERVER_WITH_A_WORKER = """
import time
from storage.compute_worker import ComputeWorker
worker = ComputeWorker()
assert worker.run(abs, -7) == 7 and worker.failures == 0
print(worker.worker_pid(), flush=True)
time.sleep(60)
"""
