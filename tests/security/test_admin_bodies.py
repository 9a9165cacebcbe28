"""Admin API bodies are hostile too (red team 10, finding 4): a reviewer saved an edit nested
248 levels, and every listing that included it answered 500 for everyone, across restarts
(orjson writes at most 254 levels).

- every admin body deeper than `max_json_depth` (64) is a 400 `json_too_deep`;
- a review edit must be a chat message list (roles, content strings or parts, tool calls);
- a stored row that cannot be written as JSON is one placeholder in a listing, not a 500.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest

from tests.conftest import (
    ADMIN_TOKEN,
    REVIEWER_TOKEN,
    FakeUpstream,
    ProxyServer,
    both_stores,
    one_store,
    proxy_settings,
    serve_proxy,
)

pytestmark = both_stores

UNREADABLE = "unreadable stored value"


def nest(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


def client(proxy: ProxyServer, token: str = REVIEWER_TOKEN) -> httpx.Client:
    http = proxy.http()
    http.headers["authorization"] = f"Bearer {token}"
    return http


def logged(proxy: ProxyServer, *texts: str) -> list[str]:
    ids = []
    for text in texts:
        raw = proxy.openai().chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": text}])
        ids.append(str(raw.headers["x-tuneloop-id"]))
    proxy.wait_for("SELECT count(*) FROM interactions", lambda r: r[0][0] >= len(ids))
    return ids


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) >= {"message", "type", "code"} and error["code"] == code, error
    return error


def edit(http: httpx.Client, item_id: str, answer: Any, revision: int = 0) -> httpx.Response:
    messages = [{"role": "user", "content": "q"}, answer]
    return http.post(f"/admin/interactions/{item_id}/review", json={
        "action": "edit", "reviewer": "rv", "expected_revision": revision, "messages": messages})


def listings_answer(http: httpx.Client, item_id: str) -> None:
    for path in ("/admin/interactions?limit=50", "/admin/interactions?review=approved",
                 "/admin/interactions?user=deep", "/admin/interactions?compact=true",
                 f"/admin/interactions/{item_id}"):
        assert http.get(path).status_code == 200, path
    queued = http.post("/admin/queue/next", json={"reviewer": "rv",
                                                  "filter": {"review": "approved"}})
    assert queued.status_code == 200, queued.text


# -- (a) every admin body: at most 64 levels ---------------------------------------------------
def deep(levels: int, **fields: Any) -> bytes:
    """A JSON object whose extra key `x` makes it nest `levels` levels in all (written by
    hand: orjson writes at most 254)."""
    tower = b"[" * (levels - 1) + b'"x"' + b"]" * (levels - 1)
    return orjson.dumps(fields)[:-1] + (b"," if fields else b"") + b'"x":' + tower + b"}"


REVIEWER_BODIES = [
    ("POST", "/admin/interactions/{id}/review", {"action": "approve", "reviewer": "rv",
                                                  "expected_revision": 0}),
    ("POST", "/admin/interactions/{id}/tags", {"reviewer": "rv", "add": ["a"]}),
    ("POST", "/admin/interactions/bulk-tags", {"reviewer": "rv", "ids": ["{id}"], "add": ["a"]}),
    ("POST", "/admin/interactions/bulk-review", {"action": "approve", "reviewer": "rv",
                                                 "ids": ["{id}"]}),
    ("POST", "/admin/interactions/{id}/claim", {"reviewer": "rv"}),
    ("POST", "/admin/interactions/{id}/release", {"reviewer": "rv"}),
    ("POST", "/admin/interactions/{id}/undo", {"reviewer": "rv"}),
    ("POST", "/admin/queue/next", {"reviewer": "rv"}),
    ("POST", "/admin/sql", {"sql": "SELECT 1"}),
]
ADMIN_BODIES = [
    ("PUT", "/admin/routes", {}),
    ("POST", "/admin/routes/support/promote", {"model": "gpt-4o-mini"}),
    ("POST", "/admin/jobs", {"dry_run": True}),
    ("POST", "/admin/forget", {"user": "nobody"}),
    ("POST", "/admin/keys", {"name": "k"}),
    ("POST", "/admin/evals", {}),
    ("POST", "/admin/cycle-runs", {}),
]


def _filled(value: Any, item_id: str) -> Any:
    if isinstance(value, str):
        return value.replace("{id}", item_id)
    if isinstance(value, list):
        return [_filled(v, item_id) for v in value]
    if isinstance(value, dict):
        return {k: _filled(v, item_id) for k, v in value.items()}
    return value


@one_store
@pytest.mark.parametrize(("token", "method", "path", "fields"),
                         [(REVIEWER_TOKEN, *b) for b in REVIEWER_BODIES]
                         + [(ADMIN_TOKEN, *b) for b in ADMIN_BODIES],
                         ids=[f"{m} {p}" for m, p, _ in REVIEWER_BODIES + ADMIN_BODIES])
def test_every_admin_body_deeper_than_64_levels_is_refused(
        proxy: ProxyServer, token: str, method: str, path: str, fields: dict[str, Any]) -> None:
    (item_id,) = logged(proxy, "a question")
    http = client(proxy, token)
    url, fields = path.replace("{id}", item_id), _filled(fields, item_id)
    for levels in (65, 300, 2000):
        response = http.request(method, url, content=deep(levels, **fields),
                                headers={"content-type": "application/json"})
        error = assert_error(response, 400, "json_too_deep")
        assert "64" in error["message"]
    # nothing was done: the item is as logged
    assert http.get(f"/admin/interactions/{item_id}").json()["revision"] == 0


def test_64_levels_are_still_accepted(proxy: ProxyServer) -> None:
    http = client(proxy)
    answer = http.post("/admin/sql", content=deep(64, sql="SELECT 1"))
    assert answer.status_code == 200 and answer.json()["rows"] == [[1]]


def test_feedback_and_dataset_header_bodies_are_refused_too(proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "a question")
    refused = proxy.http().post("/v1/feedback", content=deep(100, id=item_id, score=1))
    assert_error(refused, 400, "json_too_deep")
    header = deep(100, name="deep", format="chat", filter={}, manifest={}, reviewer="rv")
    snapshot = client(proxy).post("/admin/datasets", content=header + b"\n")
    assert_error(snapshot, 400, "json_too_deep")
    deep_manifest = orjson.dumps({"name": "deep", "format": "chat", "filter": {},
                                  "manifest": {"m": nest(200)}})
    assert_error(client(proxy).post("/admin/datasets", content=deep_manifest + b"\n"),
                 400, "json_too_deep")
    assert client(proxy).get("/admin/datasets").status_code == 200


# -- the red team's repro ------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [248, 300])
def test_a_deep_review_edit_is_refused_and_listings_keep_working(
        proxy: ProxyServer, levels: int) -> None:
    (item_id,) = logged(proxy, "deep")
    http = client(proxy)
    answer = {"role": "assistant", "content": [{"type": "text", "text": "ok",
                                                "x": nest(levels)}]}
    assert_error(edit(http, item_id, answer), 400, "json_too_deep")
    listings_answer(http, item_id)
    assert http.get(f"/admin/interactions/{item_id}").json()["revision"] == 0


# -- (b) a review edit is a chat message list ----------------------------------------------------
BAD_ANSWERS = [
    {"role": "assistant", "content": [{"type": "text", "text": "ok", "x": nest(20)}]},
    {"role": "assistant", "content": "ok", "metadata": nest(10)},
    {"role": "assistant", "content": [{"type": "text", "text": ["not", "a", "string"]}]},
    {"role": "assistant", "content": [{"type": "text"}]},
    {"role": "assistant", "content": ["a bare string is not a part"]},
    {"role": "assistant", "content": [{"text": "no type"}]},
    {"role": "assistant", "content": [{"type": "image_url", "image_url": nest(3)}]},
    {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": 7}}]},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": "f(x)"}]},
    {"role": "assistant", "content": None,
     "tool_calls": [{"id": "c", "type": "function", "function": {"arguments": "{}"}}]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]},
    {"role": "assistant", "content": "ok", "name": ["n"]},
    {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": nest(2)}},
]


@one_store
@pytest.mark.parametrize("answer", BAD_ANSWERS, ids=range(len(BAD_ANSWERS)))
def test_a_review_edit_that_is_no_chat_message_list_is_refused(
        proxy: ProxyServer, answer: dict[str, Any]) -> None:
    (item_id,) = logged(proxy, "shape")
    http = client(proxy)
    refused = edit(http, item_id, answer)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == "messages" and error["message"].startswith("messages[1]"), error
    assert http.get(f"/admin/interactions/{item_id}").json()["revision"] == 0


def test_chat_shaped_edits_with_parts_and_tool_calls_are_accepted(proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "fine")
    http = client(proxy)
    messages = [
        {"role": "system", "content": "be brief", "name": "policy"},
        {"role": "user", "content": [
            {"type": "text", "text": "what is this?", "cache_control": {"type": "ephemeral"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png",
                                                "detail": "low"}},
            {"type": "input_file", "file_id": "file-1"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "look", "arguments": "{\"q\": 1}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat.",
                                           "annotations": [{"type": "note", "a": [1, 2]}]}],
         "refusal": None},
    ]
    saved = http.post(f"/admin/interactions/{item_id}/review", json={
        "action": "edit", "reviewer": "rv", "expected_revision": 0, "messages": messages})
    assert saved.status_code == 200, saved.text
    assert http.get(f"/admin/interactions/{item_id}").json()["messages"] == messages


# -- (c) one unreadable stored row is a placeholder, the rest are served ---------------------------
@pytest.fixture
def restartable(tmp_path: Path, fake_openai: FakeUpstream) -> Iterator[Any]:
    """Start a proxy on the same DuckDB file again and again (one at a time)."""
    settings = proxy_settings(tmp_path, fake_openai.base_url)

    class Runs:
        def __init__(self) -> None:
            self.db = settings.db

        def __call__(self) -> Any:
            return serve_proxy(settings)

    yield Runs()


def test_a_stored_row_that_cannot_be_written_is_a_placeholder(
        restartable: Any, fake_openai: FakeUpstream, caplog: pytest.LogCaptureFixture) -> None:
    with restartable() as url:
        proxy = ProxyServer(url, proxy_settings(Path(restartable.db).parent,
                                                fake_openai.base_url), fake_openai)
        bad, good = logged(proxy, "bad one", "good one")
        http = client(proxy)
        for item_id in (bad, good):
            ok = edit(http, item_id, {"role": "assistant", "content": "fine"})
            assert ok.status_code == 200, ok.text
        proxy.close()
    # a value stored before these checks existed (or by anything else): 300 levels deep
    too_deep = json.dumps([{"role": "user", "content": "q"},
                           {"role": "assistant", "content": "a", "x": nest(300)}])
    with duckdb.connect(str(restartable.db)) as con:
        con.execute("UPDATE reviews SET messages = ? WHERE interaction_id = ?", [too_deep, bad])
    with restartable() as url:
        proxy = ProxyServer(url, proxy_settings(Path(restartable.db).parent,
                                                fake_openai.base_url), fake_openai)
        http = client(proxy)
        placeholder = {"id": bad, "error": UNREADABLE}
        for path in ("/admin/interactions?limit=50", "/admin/interactions?review=approved",
                     "/admin/interactions?compact=true"):
            answer = http.get(path)
            assert answer.status_code == 200, (path, answer.text)
            items = {item["id"]: item for item in answer.json()["items"]}
            assert items[bad] == placeholder
            assert items[good]["messages"][-1] == {"role": "assistant", "content": "fine"}
        one = http.get(f"/admin/interactions/{bad}")
        assert one.status_code == 200 and one.json() == placeholder
        assert http.get(f"/admin/interactions/{good}").json()["review"] == "approved"
        queued = http.post("/admin/queue/next", json={"reviewer": "rv",
                                                      "filter": {"review": "approved"}})
        assert queued.status_code == 200 and queued.json()["item"]["id"] in (bad, good)
        proxy.close()
    assert any(bad in r.getMessage() and "cannot be written" in r.getMessage()
               for r in caplog.records)
