"""Nothing lost, nothing duplicated, no secret stored, no door left open."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from storage.backend import is_postgres
from storage.store import open_store
from tests.conftest import (
    ADMIN_TOKEN,
    REVIEWER_TOKEN,
    UPSTREAM_KEY,
    FakeUpstream,
    ProxyServer,
    both_stores,
)
from tests.proc import ProxyProcess, served_store, spool_dir
from tests.store_support import readable

COOKIE = "session=cookie-SECRET-value-42"
PROXY_KEY_ENV = "sk-proxy-env-SECRET-0987654321"


def text_columns_containing(db: Path | str, needle: str) -> list[str]:
    """Search every text-like column of every table with SQL (DuckDB compresses strings, so a
    byte grep of the file would prove nothing)."""
    store = open_store(db, read_threads=1)
    try:
        return store.read_sync(lambda con: _text_columns_containing(con, needle))
    finally:
        store.close()


def _text_columns_containing(con: Any, needle: str) -> list[str]:
    text_types = ("(data_type IN ('text', 'json', 'character varying', 'ARRAY'))"
                  if is_postgres(con) else
                  "(data_type LIKE 'VARCHAR%' OR data_type = 'JSON' OR data_type LIKE '%[]')")
    columns = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        f"WHERE table_schema = current_schema() AND {text_types}").fetchall()
    hits = []
    for table, column in columns:
        count = con.execute(
            f'SELECT count(*) FROM "{table}" WHERE CAST("{column}" AS VARCHAR) LIKE ?',
            [f"%{needle}%"],
        ).fetchall()[0][0]
        if count:
            hits.append(f"{table}.{column}")
    assert columns, "no text columns found: the search itself is broken"
    return hits


def logged_ids(db: Path | str) -> list[str]:
    store = open_store(db, read_threads=1)
    try:
        return store.read_sync(
            lambda con: [r[0] for r in con.execute("SELECT id FROM interactions").fetchall()])
    finally:
        store.close()


@both_stores
def test_two_hundred_concurrent_requests_are_logged_exactly_once(proxy: ProxyServer) -> None:
    async def burst() -> list[str]:
        client = proxy.async_openai()

        async def one(n: int) -> str:
            if n % 2:
                raw = await client.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{n}"}])
                return raw.headers["x-tuneloop-id"]
            async with client.chat.completions.with_streaming_response.create(
                model="gpt-4o-mini", stream=True,
                messages=[{"role": "user", "content": f"q{n}"}],
            ) as streamed:
                async for _ in await streamed.parse():
                    pass
                return streamed.headers["x-tuneloop-id"]

        ids = await asyncio.gather(*(one(n) for n in range(200)))
        await client.close()
        return list(ids)

    ids = asyncio.run(burst())
    assert len(set(ids)) == 200
    proxy.wait_logged(200)
    rows = proxy.sql("SELECT id, count(*) OVER (PARTITION BY id) FROM interactions")
    assert {r[0] for r in rows} == set(ids)
    assert all(r[1] == 1 for r in rows)
    contents = proxy.sql(
        "SELECT count(*) FROM interactions WHERE response->'choices'->0->'message'->>'content' "
        "= 'echo: ' || (request->'messages'->0->>'content')"
    )
    assert contents == [[200]]


@both_stores
def test_kill_9_then_restart_replays_the_spool_without_duplicates(
    tmp_path: Path, fake_openai: FakeUpstream, store: str
) -> None:
    db, state_dir = served_store(store, tmp_path, "crash.duckdb")
    # a long ingest interval keeps finished interactions in the spool when the kill lands
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_INGEST_INTERVAL_MS": "60000"}
    completed: list[str] = []
    stop = threading.Event()

    proc = ProxyProcess(db, fake_openai.base_url, env, state_dir=state_dir).start()

    def traffic() -> None:
        client = openai.OpenAI(base_url=proc.url + "/v1", api_key="k", max_retries=0)
        n = 0
        while not stop.is_set():
            n += 1
            try:
                if n % 3 == 0:
                    with client.chat.completions.with_streaming_response.create(
                        model="gpt-4o-mini", stream=True,
                        messages=[{"role": "user", "content": f"s{n}"}],
                    ) as streamed:
                        for _ in streamed.parse():
                            pass
                        completed.append(streamed.headers["x-tuneloop-id"])
                else:
                    raw = client.chat.completions.with_raw_response.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": f"p{n}"}])
                    completed.append(raw.headers["x-tuneloop-id"])
            except (openai.APIError, httpx.HTTPError):
                pass  # in flight when the proxy died: not completed, may or may not be logged

    workers = [threading.Thread(target=traffic) for _ in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(random.uniform(0.8, 1.6))
    enough = time.monotonic() + 60  # a loaded machine completes fewer in the same time
    while len(completed) <= 20 and time.monotonic() < enough:
        time.sleep(0.05)
    proc.kill()
    stop.set()
    for worker in workers:
        worker.join(10)
    assert len(completed) > 20
    assert list(spool_dir(db, state_dir).glob("*.jsonl")), "nothing left to replay"

    restarted = ProxyProcess(db, fake_openai.base_url, env, port=proc.port,
                             state_dir=state_dir).start(timeout_s=120)  # replay, loaded CI
    restarted.stop()
    ids = logged_ids(db)
    assert len(ids) == len(set(ids)), "duplicates after replay"
    missing = set(completed) - set(ids)
    assert not missing, f"{len(missing)} completed interactions lost"


@both_stores
def test_no_secret_reaches_storage_spool_or_log(tmp_path: Path, fake_openai: FakeUpstream,
                                                store: str) -> None:
    db, state_dir = served_store(store, tmp_path, "secrets.duckdb")
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_REVIEWER_TOKEN": REVIEWER_TOKEN,
           "OPENAI_API_KEY": PROXY_KEY_ENV, "TUNELOOP_INGEST_INTERVAL_MS": "1500",
           "TUNELOOP_LOG_LEVEL": "debug"}
    with ProxyProcess(db, fake_openai.base_url, env, state_dir=state_dir) as proc:
        client = openai.OpenAI(base_url=proc.url + "/v1", api_key=UPSTREAM_KEY, max_retries=0,
                               default_headers={"cookie": COOKIE, "x-api-key": UPSTREAM_KEY})
        client.chat.completions.create(model="gpt-4o-mini",
                                       messages=[{"role": "user", "content": "hello"}])
        with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "s"}]
        ) as streamed:
            list(streamed.parse())
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="fail-429", messages=[])
        httpx.post(proc.url + "/v1/chat/completions", json={"model": "m", "messages": []},
                   headers={"authorization": "Bearer " + UPSTREAM_KEY,
                            "x-fake-reset": "1"})
        httpx.get(proc.url + "/admin/interactions",
                  headers={"authorization": "Bearer wrong-" + ADMIN_TOKEN})
        spool_bytes = b"".join(p.read_bytes() for p in
                               spool_dir(db, state_dir).glob("*.jsonl"))
        assert b"hello" in spool_bytes  # the spool really held the interactions
        assert fake_openai.state.requests[0].headers["authorization"] == \
            f"Bearer {UPSTREAM_KEY}"
        assert fake_openai.state.requests[0].headers.get("cookie") is None
    log_bytes = proc.log_path.read_bytes() if proc.log_path else b""
    for secret in (UPSTREAM_KEY, PROXY_KEY_ENV, COOKIE, ADMIN_TOKEN, REVIEWER_TOKEN):
        assert secret.encode() not in spool_bytes
        assert secret.encode() not in log_bytes
        assert text_columns_containing(db, secret) == [], secret
    assert text_columns_containing(db, "hello")  # the search does find what is there


READABLE = [("GET", "/admin/interactions", None), ("GET", "/admin/routes", None),
            ("POST", "/admin/sql", {"sql": "SELECT 1"}), ("GET", "/admin/routes/history", None)]


def all_admin_routes(proxy: ProxyServer) -> list[tuple[str, str]]:
    from starlette.routing import Route

    from proxy.admin import admin_routes

    found = []
    for route in admin_routes(fault_injection=True):
        assert isinstance(route, Route)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            path = route.path.replace("{interaction_id}", "x").replace("{key_id}", "x")
            found.append((method, path))
    return found


@both_stores
def test_every_admin_route_refuses_without_a_valid_token(proxy_factory: Any) -> None:
    proxy = proxy_factory(fault_injection=True)
    routes = all_admin_routes(proxy)
    assert len(routes) >= 8
    with proxy.http() as http:
        for method, path in routes:
            for headers in ({}, {"authorization": "Bearer nope"},
                            {"authorization": "Basic " + ADMIN_TOKEN}):
                response = http.request(method, path, headers=headers, json={})
                assert response.status_code == 401, (method, path, headers)
                assert response.json()["error"]["type"] == "authentication_error"


# Every admin route, classified (a property of the code: one store is enough). A new route
# that is in neither set fails the test below, so nobody can add one without deciding who may
# call it.
ADMIN_ONLY_ROUTES = {
    ("PUT", "/admin/routes"), ("POST", "/admin/routes/{alias:path}/promote"),
    ("POST", "/admin/routes/{alias:path}/rollback"), ("POST", "/admin/keys"),
    ("GET", "/admin/keys"), ("DELETE", "/admin/keys/{key_id}"),
    ("POST", "/admin/keys/{key_id}/rotate"), ("POST", "/admin/forget"),
    ("POST", "/admin/compact"),
    ("POST", "/admin/retention"), ("POST", "/admin/jobs"), ("PATCH", "/admin/jobs/{job_id}"),
    ("POST", "/admin/jobs/{job_id}"), ("POST", "/admin/evals"),
    ("POST", "/admin/evals/{run_id}/report"), ("POST", "/admin/cycle-leases/{cycle}"),
    ("DELETE", "/admin/cycle-leases/{cycle}"), ("POST", "/admin/cycle-runs"),
    ("POST", "/admin/cycle-runs/{run_id}/steps"), ("POST", "/admin/faults"),
    ("POST", "/admin/compact"), ("POST", "/admin/templates"),
}
REVIEWER_ROUTES = {
    ("GET", "/admin/templates"), ("GET", "/admin/templates/{ref}"),
    ("GET", "/admin/template-candidates"), ("GET", "/admin/routes/{alias:path}/savings"),
    ("GET", "/admin/interactions"), ("GET", "/admin/interactions/{interaction_id}"),
    ("POST", "/admin/interactions/bulk-review"), ("POST", "/admin/interactions/bulk-tags"),
    ("POST", "/admin/interactions/{interaction_id}/review"),
    ("POST", "/admin/interactions/{interaction_id}/undo"),
    ("POST", "/admin/interactions/{interaction_id}/tags"), ("GET", "/admin/stats"),
    ("POST", "/admin/interactions/usage"),
    ("GET", "/admin/routes"), ("GET", "/admin/routes/history"),
    ("GET", "/admin/routes/{alias:path}/health"), ("GET", "/admin/routes/{alias:path}/canary"),
    ("GET", "/admin/evals"),
    ("GET", "/admin/evals/{run_id}"), ("GET", "/admin/cycle-runs"),
    ("GET", "/admin/cycle-runs/{run_id}"), ("POST", "/admin/sql"), ("GET", "/admin/datasets"),
    ("POST", "/admin/datasets"), ("GET", "/admin/datasets/examples"),
    ("GET", "/admin/datasets/trace"), ("GET", "/admin/datasets/{name}"),
    ("GET", "/admin/datasets/{name}/{version}"),
    ("GET", "/admin/datasets/{name}/{version}/items"), ("GET", "/admin/jobs"),
    ("GET", "/admin/jobs/{job_id}"), ("GET", "/admin/jobs/{job_id}/events"),
    ("POST", "/admin/queue/next"), ("GET", "/admin/queue/progress"),
    ("POST", "/admin/interactions/{interaction_id}/claim"),
    ("POST", "/admin/interactions/{interaction_id}/release"),
}


def declared_admin_routes() -> set[tuple[str, str]]:
    from starlette.routing import Route

    from proxy.admin import admin_routes

    declared = set()
    for route in admin_routes(fault_injection=True):
        assert isinstance(route, Route)
        declared |= {(method, route.path) for method in (route.methods or set()) - {"HEAD"}}
    return declared


def test_every_admin_route_is_classified() -> None:
    declared = declared_admin_routes()
    assert declared - ADMIN_ONLY_ROUTES - REVIEWER_ROUTES == set(), "classify the new route"
    assert (ADMIN_ONLY_ROUTES | REVIEWER_ROUTES) - declared == set(), "a route went away"


@both_stores
def test_reviewer_token_is_refused_on_every_admin_only_route(proxy_factory: Any) -> None:
    proxy = proxy_factory(fault_injection=True)
    reviewer = {"authorization": f"Bearer {REVIEWER_TOKEN}"}
    with proxy.http() as http:
        for method, path in sorted(ADMIN_ONLY_ROUTES):
            concrete = (path.replace("{alias:path}", "bot").replace("{key_id}", "key_x")
                        .replace("{job_id}", "ftjob-x").replace("{run_id}", "run-x")
                        .replace("{cycle}", "nightly"))
            response = http.request(method, concrete, headers=reviewer, json={})
            assert response.status_code == 403, (method, path, response.text[:200])
            assert response.json()["error"]["type"] == "permission_error"
        for method, path, body in READABLE:
            assert http.request(method, path, headers=reviewer, json=body).status_code == 200
    assert proxy.admin().routes() == {}


@both_stores
def test_issued_keys(proxy_factory: Any) -> None:
    proxy = proxy_factory(issue_keys=True, openai_api_key="sk-held-by-the-proxy")
    created = proxy.admin().create_key("billing-app")
    assert created["key"].startswith("tl-")
    good = proxy.openai(api_key=created["key"])
    good.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert proxy.upstream.state.requests[-1].headers["authorization"] == \
        "Bearer sk-held-by-the-proxy"
    with pytest.raises(openai.AuthenticationError):
        proxy.openai(api_key="sk-someone-elses").chat.completions.create(
            model="gpt-4o-mini", messages=[])
    proxy.admin().revoke_key(created["id"])
    with pytest.raises(openai.AuthenticationError):
        good.chat.completions.create(model="gpt-4o-mini", messages=[])
    proxy.wait_logged(1)
    assert proxy.sql("SELECT count(*) FROM api_keys WHERE key_hash = "
                     f"'{created['key']}'") == [[0]]
    assert text_columns_containing_live(proxy, created["key"]) == 0


def text_columns_containing_live(proxy: ProxyServer, needle: str) -> int:
    rows = readable(proxy.sql(
        "SELECT table_name, column_name FROM information_schema.columns WHERE "
        "table_schema = 'main' AND (data_type LIKE 'VARCHAR%' OR data_type = 'JSON')"
    ))
    total = 0
    for table, column in rows:
        total += proxy.sql(
            f"SELECT count(*) FROM \"{table}\" WHERE CAST(\"{column}\" AS VARCHAR) "
            f"LIKE '%{needle}%'"
        )[0][0]
    return total


@both_stores
def test_injected_storage_fault_keeps_requests_flowing(proxy_factory: Any) -> None:
    proxy = proxy_factory(fault_injection=True)
    admin = proxy.admin()
    admin.request("POST", "/admin/faults", json={"storage_fail_seconds": 1.0})
    client = proxy.openai()
    ids = [client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"f{n}"}]
    ).headers["x-tuneloop-id"] for n in range(20)]
    with proxy.http() as http:
        assert http.get("/healthz").json()["spool_bytes"] > 0
    proxy.wait_logged(20, timeout_s=15)
    logged = {r[0] for r in proxy.sql("SELECT id FROM interactions")}
    assert set(ids) == logged


@both_stores
def test_export_files_hold_no_secret(proxy: ProxyServer, tmp_path: Path) -> None:
    from exporter.datasets import build_dataset
    from exporter.pipeline import ExportOptions

    client = proxy.openai(default_headers={"cookie": COOKIE, "x-api-key": UPSTREAM_KEY})
    ids = [client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"question number {n}"}]
    ).headers["x-tuneloop-id"] for n in range(12)]
    proxy.wait_logged(12)
    admin = proxy.admin()
    admin.bulk_review("approve", reviewer="rita", ids=ids)
    result = build_dataset(admin, tmp_path / "export",
                           ExportOptions(name="secrets-check", workers=1))
    files = list(result.path.iterdir())
    assert {"train.jsonl", "validation.jsonl", "manifest.json"} <= {f.name for f in files}
    everything = b"".join(f.read_bytes() for f in files)
    assert b"question number 3" in everything  # the files really hold the examples
    for secret in (UPSTREAM_KEY, COOKIE, ADMIN_TOKEN, REVIEWER_TOKEN):
        assert secret.encode() not in everything
