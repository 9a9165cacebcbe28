"""Fixtures: real servers on loopback (the fake upstream, the proxy) and real stores.

`proxy` is the one fixture for the client side: it runs the real app under uvicorn against the
fake OpenAI upstream and hands out the official SDK clients and an admin client.

Stores: `store` is the database spec (`Settings.db`) a test's server or storage uses, and
`proxy_factory`/`proxy` use it. Unparametrized it is a DuckDB file in tmp_path. A suite runs
against both backends with

    pytestmark = both_stores          # from tests.conftest; ids [duckdb] and [postgres]

(the tests using `store` get `pytest.mark.parametrize("store", ["duckdb", "postgres"],
indirect=True)`, the others in the module run once); one test can take `@both_stores` too.
A test in such a module that exercises no storage difference (validation refused before any
SQL, auth, relaying) takes `@one_store` and runs once, on DuckDB: keep every test whose
outcome goes through SQL on both.
With "postgres", `store` is a URL `postgresql://tuneloop@127.0.0.1:PORT/test_N_xxxx` to a fresh,
empty database owned by the
non-superuser role `tuneloop`, dropped after the test. The cluster behind it (`pg_cluster`,
tests/pg_cluster.py: initdb in a temp dir, run as the `postgres` user when we are root) starts
once per session (per xdist worker: each has its own cluster, directory and free port), only
when a test asks for it, and is stopped and deleted at the end. Other
Postgres fixtures: `pg_url` (a fresh database's URL), `pg_url_factory` (more of them in one
test) and `pg_cluster.admin_url()` (the superuser, to create roles or look at the cluster).
Without Postgres installed these tests fail with what was looked for: `.ci/run` installs it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from proxy.app import create_app
from proxy.server import connection_options
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import create_app as create_fake_openai
from tests.fakes.server import serve_app
from tests.pg_cluster import PgCluster, PgClusterError
from tuneloop.client import AdminClient
from tuneloop.config import Settings

ADMIN_TOKEN = "tla-test-admin-token-0123456789"
REVIEWER_TOKEN = "tlr-test-reviewer-token-0123456789"
UPSTREAM_KEY = "sk-test-upstream-key-SECRET-0123456789"

STORES = ("duckdb", "postgres")
WAIT_S = 30.0
"""How long a test waits for what runs off the request path (ingest): a deadline, not a sleep.
Under `-n 4` on a shared 2-core machine a first ingest of 200 rows took over 10 s."""

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

both_stores = pytest.mark.both_stores
"""Run a test (or, as `pytestmark`, a module) once on each backend: the tests that use `store`
(directly or through `proxy`) are parametrized with it; pure-function tests in the same module
run once, as they are."""


one_store = pytest.mark.one_store
"""In a `both_stores` module, a test that exercises no storage difference (HTTP validation
before any SQL, auth refusals, relaying): it runs once, on the default DuckDB store."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_stores: run the test once on each store backend")
    config.addinivalue_line("markers", "one_store: run once (DuckDB) despite both_stores")


# modules whose tests share an expensive module-scoped fixture: one worker builds it once
ONE_WORKER_MODULES = ("test_review_queries.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`-n N --dist loadgroup`, as .ci/run runs the suite) the Chromium
    tests share one worker: one headless browser and review app at a time, beside the rest;
    so do the tests of each of ONE_WORKER_MODULES."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.xdist_group("browser"))
        elif item.path.name in ONE_WORKER_MODULES:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    definition = metafunc.definition
    if (definition.get_closest_marker("both_stores") and "store" in metafunc.fixturenames
            and not definition.get_closest_marker("one_store")):
        metafunc.parametrize("store", STORES, indirect=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One Postgres for the session, started on first use, stopped and deleted at the end."""
    try:
        cluster = PgCluster.start()
    except PgClusterError as exc:
        pytest.fail(f"can't start the test Postgres: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url_factory(pg_cluster: PgCluster) -> Iterator[Callable[[], str]]:
    """Each call: the URL of a new empty database; all are dropped (WITH FORCE) after the test."""
    urls: list[str] = []

    def create() -> str:
        urls.append(pg_cluster.create_database())
        return urls[-1]

    yield create
    for url in reversed(urls):
        pg_cluster.drop_database(url)


@pytest.fixture
def pg_url(pg_url_factory: Callable[[], str]) -> str:
    """A fresh empty database for this test, owned by the role `tuneloop`."""
    return pg_url_factory()


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The `db` setting for this test: a DuckDB file in tmp_path (the default) or, when
    parametrized with "postgres", a fresh Postgres database's URL."""
    kind = getattr(request, "param", "duckdb")
    if kind == "duckdb":
        return str(tmp_path / "tuneloop.duckdb")
    if kind == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    raise ValueError(f"unknown store {kind!r}: use one of {STORES}")


@dataclass
class FakeUpstream:
    url: str
    state: FakeOpenAIState

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


@dataclass
class ProxyServer:
    url: str
    settings: Settings
    upstream: FakeUpstream
    _clients: list[Any] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def openai(self, api_key: str = UPSTREAM_KEY, **kwargs: Any) -> openai.OpenAI:
        client = openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, **kwargs)
        self._clients.append(client)
        return client

    def async_openai(self, api_key: str = UPSTREAM_KEY, **kwargs: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, **kwargs)

    def admin(self, token: str = ADMIN_TOKEN) -> AdminClient:
        client = AdminClient(self.url, token)
        self._clients.append(client)
        return client

    def http(self) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=30)
        self._clients.append(client)
        return client

    def sql(self, query: str) -> list[list[Any]]:
        rows: list[list[Any]] = self.admin().sql(query)["rows"]
        return rows

    def wait_for(
        self, query: str, predicate: Callable[[list[list[Any]]], bool],
        timeout_s: float = WAIT_S,
    ) -> list[list[Any]]:
        """Poll a SQL query until the predicate holds (ingest runs off the request path)."""
        deadline = time.monotonic() + timeout_s
        while True:
            rows = self.sql(query)
            if predicate(rows):
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting on {query!r}; last rows {rows!r}")
            time.sleep(0.02)

    def wait_logged(self, count: int, timeout_s: float = WAIT_S) -> None:
        self.wait_for("SELECT count(*) FROM interactions", lambda r: r[0][0] >= count, timeout_s)

    def row(self, interaction_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                return self.admin().interaction(interaction_id)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def close(self) -> None:
        for client in self._clients:
            client.close()


@pytest.fixture
def fake_openai() -> Iterator[FakeUpstream]:
    state = FakeOpenAIState()
    with serve_app(create_fake_openai(state)) as url:
        yield FakeUpstream(url, state)


def serve_proxy(settings: Settings) -> contextlib.AbstractContextManager[str]:
    """The app as `tuneloop serve` serves each connection (its protocol, header timer and
    keep-alive: uvicorn's own 5 s keep-alive met the SDK's 5 s pool expiry, issue 12)."""
    return serve_app(create_app(settings), **connection_options(settings))


@contextmanager
def running_proxy(tmp: Path, upstream: FakeUpstream, **overrides: Any) -> Iterator[ProxyServer]:
    """A proxy in front of `upstream` (settings: `proxy_settings` with `overrides`), stopped
    and closed at the end."""
    settings = proxy_settings(tmp, upstream.base_url, **overrides)
    with serve_proxy(settings) as url:
        proxy = ProxyServer(url, settings, upstream)
        try:
            yield proxy
        finally:
            proxy.close()


@contextmanager
def module_proxy(tmp: Path, **overrides: Any) -> Iterator[ProxyServer]:
    """A fake OpenAI and a proxy in front of it, for a module-scoped fixture (DuckDB in tmp)."""
    state = FakeOpenAIState()
    with serve_app(create_fake_openai(state)) as upstream_url, \
            running_proxy(tmp, FakeUpstream(upstream_url, state), **overrides) as proxy:
        yield proxy


def last_sent(proxy: ProxyServer, model: str) -> dict[str, Any]:
    """The newest body the fake upstream received for `model`."""
    bodies = [r.json for r in proxy.upstream.state.requests
              if isinstance(r.json, dict) and r.json.get("model") == model]
    assert bodies, f"nothing reached {model}"
    return bodies[-1]


FAKE_CONTROLS = ("x-fake-fail", "x-fake-delay-ms", "x-fake-cut-after", "x-fake-reset",
                 "x-fake-retry-after", "x-custom")


def proxy_settings(tmp_path: Path, upstream: str, **overrides: Any) -> Settings:
    """Test settings; `db` defaults to a DuckDB file in tmp_path. With a Postgres URL as `db`,
    the replica's local files (spool, secrets, exports) go to `state_dir` in tmp_path."""
    values: dict[str, Any] = {
        "db": tmp_path / "tuneloop.duckdb",
        "state_dir": tmp_path / "tuneloop-state",
        "upstream": upstream,
        "admin_token": ADMIN_TOKEN,
        "reviewer_token": REVIEWER_TOKEN,
        "ingest_interval_ms": 20,
        "connect_timeout_s": 2.0,
        "read_timeout_s": 10.0,
        # the fake upstream's test controls (not OpenAI headers: listed to be forwarded)
        "forward_headers": frozenset(FAKE_CONTROLS),
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
def proxy_factory(
    tmp_path: Path, fake_openai: FakeUpstream, store: str
) -> Iterator[Callable[..., ProxyServer]]:
    """Start a proxy with extra settings on the test's `store` (unless `db=` is given); stopped
    (and drained) at the end of the test, before the store is dropped."""
    stack: list[Any] = []

    def start(**overrides: Any) -> ProxyServer:
        upstream = overrides.pop("upstream", fake_openai.base_url)
        overrides.setdefault("db", store)
        settings = proxy_settings(tmp_path, upstream, **overrides)
        manager = serve_proxy(settings)
        url = manager.__enter__()
        server = ProxyServer(url, settings, fake_openai)
        stack.append((manager, server))
        return server

    yield start
    for manager, server in reversed(stack):
        server.close()
        manager.__exit__(None, None, None)


@pytest.fixture
def proxy(proxy_factory: Callable[..., ProxyServer]) -> ProxyServer:
    return proxy_factory()


@pytest.fixture(autouse=True)
def _browser_patience(request: pytest.FixtureRequest) -> None:
    """Chromium tests wait up to 20 s for what a page should show (playwright's `expect`
    waits 5 s by default): a loaded machine draws slowly, never wrongly."""
    if request.node.get_closest_marker("browser"):
        from playwright.sync_api import expect

        expect.set_options(timeout=20_000)


@pytest.fixture(autouse=True)
def _keep_main_module() -> Iterator[None]:
    """Streamlit's script runner (AppTest) installs the app script as `sys.modules["__main__"]`
    and leaves it there; a process spawned afterwards (the compute worker) would then run the
    review app as its main module. Each test gets back the real one."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main
