"""While Postgres is down the admin API answers an OpenAI-shaped 503 storage_unavailable after
`store_wait_s` (review r12w LOW 4: it hung 30 s, the pool's default wait, then answered 500
internal_error and logged a traceback a request). A real Postgres of the test's own, stopped
and started again under a running proxy."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.pg_cluster import PgCluster, _as_server_user, _run

SECRET = "s3cret-pw"


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    """A cluster of this test only (stopping the session's would end the others' databases);
    set up before the proxy, so it is stopped after the proxy has shut down."""
    cluster = PgCluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _pg_ctl_stop(cluster: PgCluster) -> None:
    _run([*_as_server_user(), str(cluster.bindir / "pg_ctl"), "-D", str(cluster.data_dir),
          "-m", "fast", "-w", "-t", "30", "-s", "stop"], timeout_s=40)


def test_admin_api_answers_503_while_postgres_is_down(
        own_cluster: PgCluster, proxy_factory: Any, tmp_path: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    url = own_cluster.create_database().replace("tuneloop@", f"tuneloop:{SECRET}@")  # trust
    proxy = proxy_factory(db=url, state_dir=tmp_path / "state", store_wait_s=1.5)
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    assert httpx.get(f"{proxy.url}/admin/keys", headers=headers, timeout=60).status_code == 200

    _pg_ctl_stop(own_cluster)
    caplog.clear()
    said = []
    with caplog.at_level(logging.INFO):
        for method, body in (("GET", None), ("POST", {"name": "during-outage"}),
                             ("GET", None)):
            answer = httpx.request(method, f"{proxy.url}/admin/keys", headers=headers,
                                   json=body, timeout=60)
            assert answer.status_code == 503, answer.text
            error = answer.json()["error"]
            assert (error["type"], error["code"]) == ("server_error", "storage_unavailable")
            store = own_cluster.url("x").split("/x")[0]  # the store, named, no password
            assert error["message"].startswith(f"the store {store}/"), error
            said.append(error["message"])
            assert SECRET not in answer.text
    # a connection the pool held may be found lost during the first call; then none is made
    assert "is unavailable: no connection within 1.5 s (store_wait_s)" in said[-1], said
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
    assert tracebacks == []
    assert not any(SECRET in r.getMessage() for r in caplog.records)

    own_cluster._pg_ctl_start()  # back: the pool reconnects, the API answers again
    deadline = time.monotonic() + 60
    while True:
        answer = httpx.get(f"{proxy.url}/admin/keys", headers=headers, timeout=60)
        if answer.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert answer.status_code == 200, answer.text
