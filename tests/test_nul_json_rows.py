"""A logged request or answer whose JSON holds an escaped NUL (`\\u0000`, what an SDK sends for
a NUL character in a message): Postgres keeps it as `json` but can't turn any part of that
document into text (`->>` fails on the whole row), so every query of ours that reads JSON in
SQL must still answer on both stores, for that row and for the others."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ProxyServer, both_stores

NUL = "\u0000"


def chat(proxy: ProxyServer, content: str, **extra: Any) -> str:
    response = httpx.post(
        proxy.base_url + "/chat/completions", timeout=30,
        headers={"authorization": "Bearer sk-test", "x-tuneloop-tags": "nul"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}],
              **extra})
    assert response.status_code == 200, response.text
    return response.headers["x-tuneloop-id"]


@both_stores
def test_our_queries_answer_with_escaped_nul_rows(proxy: ProxyServer) -> None:
    admin = proxy.admin()
    admin.put_routes({"support": {"targets": [{"model": "gpt-4o-mini"}]}})
    plain = chat(proxy, "hello banana", user="alice", model="support")
    poisoned = chat(proxy, f"evil{NUL}banana", user="bob", model="support")
    chat(proxy, "meta banana", metadata={"k": f"v{NUL}w"}, store=True, model="support")
    proxy.wait_logged(3)

    assert len(admin.interactions(limit=50)["items"]) == 3
    assert admin.interaction(poisoned)["id"] == poisoned
    assert len(admin.interactions(user="bob")["items"]) == 1
    assert len(admin.interactions(tag="nul")["items"]) == 3
    assert {i["id"] for i in admin.search("banana")["items"]} >= {plain}
    assert admin.stats()
    assert admin.usage([plain, poisoned])
    assert admin.progress(reviewer="ann") is not None
    assert admin.next_item(reviewer="ann") is not None
    assert admin.review(poisoned, "approve", reviewer="ann", expected_revision=0)
    assert admin.review(plain, "approve", reviewer="ann", expected_revision=0)
    examples = list(admin.dataset_examples({}))
    assert len(examples) == 2
    assert admin.route_health("support")
    assert admin.savings("support")
    assert admin.forget("alice")["deleted"]["interactions"] == 1
    assert {i["id"] for i in admin.interactions(limit=50)["items"]} >= {poisoned}
    assert admin.forget("bob")["deleted"]["interactions"] == 1
