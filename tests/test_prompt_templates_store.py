"""The prompt_templates table (migration 46) and the traffic sample discovery reads, on both
stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from storage.prompt_templates import (
    freeze_template,
    get_template,
    list_templates,
    load_template,
    request_texts,
    sample_ids,
)
from tests.conftest import both_stores
from tests.store_support import connected
from tuneloop.errors import BadRequest, NotFound
from tuneloop.prompt_template import strip_messages

pytestmark = both_stores

PARTS = {"system_prompt": "You are Acme's bot. ¿Sí?", "few_shot": [
    {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def test_freezing_a_name_again_adds_the_next_version_and_old_ones_stay(store: str) -> None:
    with connected(store) as con:
        first = freeze_template(con, {"name": "support-bot", "parts": PARTS,
                                      "alias": "support-bot", "share": 0.9, "tokens": 42,
                                      "sample_size": 100}, "ann")
        assert first["ref"] == "support-bot-v1" and first["version"] == 1
        assert first["share"] == 0.9 and first["tokens"] == 42 and first["created_by"] == "ann"
        second = freeze_template(con, {"name": "support-bot",
                                       "parts": {"system_prompt": "shorter"}}, None)
        assert second["ref"] == "support-bot-v2"
        assert get_template(con, "support-bot-v1")["parts"]["system_prompt"] == PARTS[
            "system_prompt"]
        assert get_template(con, "support-bot")["version"] == 2  # the newest
        template = load_template(con, "support-bot-v1")
        assert strip_messages(template, [{"role": "system", "content": PARTS["system_prompt"]},
                                         *PARTS["few_shot"],
                                         {"role": "user", "content": "q"}]) == [
            {"role": "user", "content": "q"}]
        assert [t["ref"] for t in list_templates(con)] == ["support-bot-v2", "support-bot-v1"]
        assert [t["ref"] for t in list_templates(con, "support-bot")] == ["support-bot-v1"]
        with pytest.raises(NotFound, match="support-bot-v3"):
            get_template(con, "support-bot-v3")
        with pytest.raises(NotFound):
            get_template(con, "other")


BAD_FREEZES: list[tuple[dict[str, object], str]] = [
    ({"name": "x-v1", "parts": PARTS}, "-v<number>"),
    ({"name": "x", "parts": "text"}, "parts must be a JSON object"),
    ({"name": "x", "parts": {}}, "at least one part"),
    ({"name": "x", "parts": {"bogus": 1}}, "unknown template fields"),
    ({"name": "x", "parts": PARTS, "share": 2}, "share must be between 0 and 1"),
    ({"name": "x", "parts": PARTS, "tokens": -1}, "tokens must be a whole number"),
    ({"name": "x", "parts": PARTS, "alias": ""}, "alias must be a string"),
]


def test_bad_freezes_are_refused_and_store_nothing(store: str) -> None:
    with connected(store) as con:
        for body, needle in BAD_FREEZES:
            with pytest.raises(BadRequest, match=needle):
                freeze_template(con, body, None)
        assert list_templates(con) == []


def test_recent_requests_are_the_newest_production_chat_and_legacy_ones(store: str) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        ("a", "chat.completions", "bot", "production", {"messages": [{"role": "user",
                                                                       "content": "1"}]}),
        ("b", "completions", "bot", "production", {"prompt": "2"}),
        ("c", "chat.completions", "bot", "evaluation", {"messages": []}),
        ("d", "embeddings", "bot", "production", {"input": "x"}),
        ("e", "chat.completions", "other", "production", {"messages": []}),
        ("f", "chat.completions", "bot", "production", {"messages": [{"role": "user",
                                                                       "content": "3"}]}),
    ]
    with connected(store) as con:
        for n, (rid, endpoint, model, traffic, request) in enumerate(rows):
            con.execute(
                "INSERT INTO interactions (id, created_at, endpoint, model, upstream_model, "
                "traffic, request) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [rid, start + timedelta(seconds=n), endpoint, model, "gpt-4o-mini", traffic,
                 orjson.dumps(request).decode()])
        ids, read = sample_ids(con, "bot", 10, 10_000, 1_000)
        assert ids == ["f", "b", "a"] and read == {"considered": 3, "too_large": 0,
                                                   "over_budget": 0}
        found = request_texts(con, ids)
        assert [orjson.loads(r[1]) for r in found] == [
            {"messages": [{"role": "user", "content": "3"}]}, {"prompt": "2"},
            {"messages": [{"role": "user", "content": "1"}]}]
        assert {r[2] for r in found} == {"gpt-4o-mini"}
        assert sample_ids(con, "bot", 2, 10_000, 1_000)[0] == ["f", "b"]


def test_the_sample_is_cut_at_a_byte_budget_and_a_huge_request_is_left_out(store: str) -> None:
    """A row count alone does not bound discovery's memory (5,000 requests of 100 KB took
    4.8 GB): the bodies read add up to at most the budget, newest first."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    sizes = {"old": 300, "mid": 300, "huge": 5_000, "new": 300}
    with connected(store) as con:
        for n, (rid, size) in enumerate(sizes.items()):
            body = {"messages": [{"role": "user", "content": "x" * size}]}
            con.execute(
                "INSERT INTO interactions (id, created_at, endpoint, model, traffic, request) "
                "VALUES (?, ?, 'chat.completions', 'bot', 'production', ?)",
                [rid, start + timedelta(seconds=n), orjson.dumps(body).decode()])
        ids, read = sample_ids(con, "bot", 100, 700, 1_000)
        assert ids == ["new", "mid"]
        assert read == {"considered": 4, "too_large": 1, "over_budget": 1}
        assert len(request_texts(con, ids)) == 2
