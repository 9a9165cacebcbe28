"""The review list answers bounded previews (issue 12, r12x3 LOW 5): a page of big logged rows
is bounded in bytes, each cut item says it is cut, the item itself is whole (or, past
`item_full_max_chars`, a preview that says it is too big) and the stored row is untouched.
A real proxy on loopback, both stores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from storage.previews import CUT_MARK
from tests.conftest import REVIEWER_TOKEN, ProxyServer, both_stores

pytestmark = both_stores

BIG = 300_000  # characters of each big question (the fake upstream echoes it as the answer)


def big_text(n: int) -> str:
    return f"question {n}: " + "".join(chr(ord("a") + (i * 7 + n) % 26) for i in range(BIG))


def log_big(proxy: ProxyServer, count: int, messages: int = 1, first: int = 0
            ) -> dict[str, str]:
    """`count` logged chats with a big question each (and `messages` - 1 small ones before
    it): {id: question}. `first`: how many rows were logged before."""
    logged: dict[str, str] = {}
    for n in range(count):
        text = big_text(n)
        before = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " * 40}
                  for i in range(messages - 1)]
        raw = proxy.openai().chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[*before, {"role": "user", "content": text}])
        logged[str(raw.headers["x-tuneloop-id"])] = text
    proxy.wait_for("SELECT count(*) FROM interactions", lambda r: r[0][0] == first + count)
    return logged


def raw_page(proxy: ProxyServer, **params: Any) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(f"{proxy.url}/admin/interactions", params=params, timeout=60,
                       headers={"Authorization": f"Bearer {REVIEWER_TOKEN}"})
    assert answer.status_code == 200, answer.text
    return len(answer.content), answer.json()


@pytest.mark.parametrize("compact", [False, True])
def test_a_page_of_big_rows_is_previews_and_each_says_it_is_cut(
        proxy: ProxyServer, compact: bool) -> None:
    logged = log_big(proxy, 5)
    size, page = raw_page(proxy, limit=50, compact=str(compact).lower())
    assert [i["id"] for i in page["items"]] == sorted(logged, reverse=True)
    chars = proxy.settings.preview_text_chars
    # five rows of 2 x 300,000 characters; the page holds their previews: a few KB each
    assert size < 5 * 8 * chars, size
    for item in page["items"]:
        assert item["truncated"] is True
        assert {"request", "response", "messages"} <= set(item["truncated_fields"])
        assert item["stored_chars"]["request"] > BIG
        question, answer = item["messages"][-2]["content"], item["messages"][-1]["content"]
        assert question == logged[item["id"]][:chars] + CUT_MARK
        assert answer == ("echo: " + logged[item["id"]])[:chars] + CUT_MARK
        if compact:
            assert "request" not in item and "response" not in item
        else:
            assert item["request"]["messages"][-1]["content"] == question
    # the item itself is whole, and the stored row untouched
    reviewer = proxy.admin(REVIEWER_TOKEN)
    for item_id, text in logged.items():
        whole = reviewer.interaction(item_id)
        assert whole["truncated"] is False and whole["too_big"] is False
        assert whole["current"][-2]["content"] == text
        assert whole["current"][-1]["content"] == "echo: " + text
        assert whole["request"]["messages"][-1]["content"] == text


def test_a_preview_of_a_long_conversation_keeps_its_start(proxy: ProxyServer) -> None:
    """A request longer than `preview_field_chars` in small messages: the database hands
    over its start, closed into JSON; the item says the request was cut."""
    logged = log_big(proxy, 1, messages=200)  # 199 turns of 320 characters before it
    (item,) = raw_page(proxy)[1]["items"]
    assert item["truncated"] is True and "request" in item["truncated_fields"]
    sent = item["request"]["messages"]
    assert 0 < len(sent) < 200
    assert sent[0] == {"role": "user", "content": "turn 0 " * 40}
    assert item["messages"][-1]["content"].startswith("echo: question 0")
    whole = proxy.admin(REVIEWER_TOKEN).interaction(next(iter(logged)))
    assert len(whole["current"]) == 201 and whole["truncated"] is False


def test_a_page_stops_at_its_byte_budget_and_goes_on(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    proxy = proxy_factory(list_page_max_bytes=20_000)
    logged = log_big(proxy, 6)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 50, **({"cursor": cursor} if cursor else {})}
        size, page = raw_page(proxy, **params)
        assert len(page["items"]) == 1 or size <= 20_000 + 200, size
        seen += [i["id"] for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(logged, reverse=True) and pages > 1


def test_an_item_past_the_full_cap_is_a_preview_that_says_so(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    proxy = proxy_factory(item_full_max_chars=100_000)
    logged = log_big(proxy, 1)
    (item_id, text), = logged.items()
    stored = proxy.sql(f"SELECT length(request::VARCHAR), length(response::VARCHAR) "
                       f"FROM interactions WHERE id = '{item_id}'")
    reviewer = proxy.admin(REVIEWER_TOKEN)
    item = reviewer.interaction(item_id)
    chars = proxy.settings.preview_text_chars
    assert item["too_big"] is True and item["truncated"] is True
    assert item["stored_chars"]["request"] == stored[0][0]
    assert item["current"][-2]["content"] == text[:chars] + CUT_MARK
    assert item["original"][-2]["content"] == text[:chars] + CUT_MARK
    taken = reviewer.next_item(reviewer="ann", filter={"review": "pending"})["item"]
    assert taken["id"] == item_id and taken["too_big"] is True
    # it is still reviewed as logged, and the stored row stays whole
    done = reviewer.review(item_id, "approve", reviewer="ann", expected_revision=0)
    assert done["review"] == "approved"
    assert proxy.sql(f"SELECT length(request::VARCHAR), length(response::VARCHAR) "
                     f"FROM interactions WHERE id = '{item_id}'") == stored
