"""A NUL character (U+0000) in anything the admin API would store (a review's reason, the
reviewer's name, an edited answer, tags, key, route, template and dataset names, feedback
comments, a path or query parameter): a clear 400 `nul_character` on both stores, and nothing
stored. (DuckDB text holds a NUL and Postgres text can't: before, DuckDB stored it, which then
stopped `migrate-store`, and a replica on Postgres answered 500.)"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import ADMIN_TOKEN, ProxyServer, both_stores

pytestmark = both_stores
NUL = "\u0000"


def logged(proxy: ProxyServer) -> str:
    answer = proxy.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    proxy.wait_logged(1)
    return answer.headers["x-tuneloop-id"]


def refused(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "nul_character", error
    assert "NUL character (U+0000)" in error["message"]


def bodies(interaction: str) -> list[tuple[str, str, Any]]:
    review = f"/admin/interactions/{interaction}/review"
    answer = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": f"a{NUL}b"}]
    return [
        ("POST", review, {"action": "reject", "reviewer": "ann", "expected_revision": 0,
                          "reason": f"bad{NUL}reason"}),
        ("POST", review, {"action": "approve", "reviewer": f"a{NUL}nn", "expected_revision": 0}),
        ("POST", review, {"action": "edit", "reviewer": "ann", "expected_revision": 0,
                          "messages": answer}),
        ("POST", f"/admin/interactions/{interaction}/tags",
         {"reviewer": "ann", "add": [f"gold{NUL}"]}),
        ("POST", "/admin/interactions/bulk-review",
         {"action": "reject", "reviewer": "ann", "ids": [interaction], "reason": f"x{NUL}"}),
        ("POST", f"/admin/interactions/{interaction}/claim", {"reviewer": f"b{NUL}ob"}),
        ("POST", "/admin/keys", {"name": f"billing{NUL}app"}),
        ("PUT", "/admin/routes", {f"sup{NUL}port": {"targets": [{"model": "gpt-4o-mini"}]}}),
        ("PUT", "/admin/routes", {"support": {"targets": [{"model": f"gpt{NUL}"}]}}),
        ("POST", "/admin/templates", {"name": f"t{NUL}", "parts": {"system_prompt": "x"}}),
        ("POST", "/admin/forget", {"user": f"al{NUL}ice"}),
        ("POST", "/admin/sql", {"sql": f"SELECT '{NUL}'"}),
        ("POST", "/v1/feedback", {"id": interaction, "score": 1, "comment": f"ok{NUL}"}),
    ]


def test_bodies_with_a_nul_are_refused(proxy: ProxyServer) -> None:
    interaction = logged(proxy)
    with httpx.Client(headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as http:
        for method, path, body in bodies(interaction):
            refused(http.request(method, proxy.url + path, json=body))
        # an escaped backslash followed by "u0000" is ordinary text
        ok = http.post(proxy.url + f"/admin/interactions/{interaction}/review",
                       json={"action": "reject", "reviewer": "ann", "expected_revision": 0,
                             "reason": "not \\u0000 a NUL"})
        assert ok.status_code == 200, ok.text
        item = http.get(proxy.url + f"/admin/interactions/{interaction}").json()
    assert item["revision"] == 1 and item["review"] == "rejected"
    assert [r["reason"] for r in item["revisions"]] == ["not \\u0000 a NUL"]
    assert item["tags"] == []


@pytest.mark.parametrize("path", [
    "/admin/interactions/a%00b", "/admin/interactions/a%00b/review",
    "/admin/routes/sup%00port/canary", "/admin/datasets/n%00/1",
    "/admin/interactions?model=a%00", "/admin/interactions?cursor=%00",
    "/admin/stats?since=%00",
])
def test_urls_with_a_nul_are_refused(proxy: ProxyServer, path: str) -> None:
    with httpx.Client(headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as http:
        for method in ("GET", "POST"):
            refused(http.request(method, proxy.url + path, json={}))


def test_dataset_lines_with_a_nul_are_refused(proxy: ProxyServer) -> None:
    interaction = logged(proxy)
    header = {"name": "support", "format": "chat", "filter": {}, "manifest": {}}
    item = {"interaction_id": interaction, "revision_id": None, "revision": None,
            "split": "skipped", "line": None, "skipped": f"too long{NUL}"}
    with httpx.Client(headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as http:
        for head, line in (({**header, "name": f"sup{NUL}port"}, {**item, "skipped": None}),
                           ({**header, "path": "/tmp/x"}, item)):
            body = orjson.dumps(head) + b"\n" + orjson.dumps(line) + b"\n"
            refused(http.post(proxy.url + "/admin/datasets", content=body))
        assert http.get(proxy.url + "/admin/datasets").json()["datasets"] == []
