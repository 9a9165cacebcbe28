"""Streams that report no usage get estimated tokens and cost at ingest, marked as estimates."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import orjson
import pytest

from proxy.pricing import PriceMap
from proxy.usage_estimate import UsageEstimator, legacy_prompt_tokens
from storage.compute_worker import ComputeWorker
from storage.records import to_arrow
from tests.conftest import ProxyServer
from tuneloop.tokenizers import load_encoding

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
                                          "properties": {"query": {"type": "string"}}}}}]


def tokens(encoding: str, text: str) -> int:
    return len(load_encoding(encoding).encode_ordinary(text))


def test_a_chat_stream_without_usage_is_estimated(proxy: ProxyServer) -> None:
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "tell me about Paris"}]
    with proxy.openai().chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=messages, tools=TOOLS, n=2, stream=True,  # type: ignore
    ) as raw:
        interaction_id = raw.headers["x-tuneloop-id"]
        list(raw.parse())
    row = proxy.row(interaction_id)
    assert row["response"]["usage"] is None  # the logged response stays as the upstream sent it

    # OpenAI's recipe: 3 to prime the answer, tools as JSON text, 3 + role + content a message
    expected_prompt = 3 + tokens("o200k_base", orjson.dumps(TOOLS).decode()) + sum(
        3 + tokens("o200k_base", m["role"]) + tokens("o200k_base", m["content"])
        for m in messages)
    answers = [c["message"] for c in row["response"]["choices"]]
    assert len(answers) == 2 and answers[0]["tool_calls"]  # the fake calls the tool
    expected_completion = sum(  # what the answers say: text, or tool names and arguments
        tokens("o200k_base", a["content"] or "") + sum(
            tokens("o200k_base", call["function"]["name"])
            + tokens("o200k_base", call["function"]["arguments"])
            for call in a.get("tool_calls") or [])
        for a in answers)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (expected_prompt,
                                                               expected_completion)
    assert row["usage_estimated"] is True
    assert row["cost_usd"] == PriceMap.load().cost("gpt-4o-mini", expected_prompt,
                                                   expected_completion) > 0


def test_reported_usage_is_kept_and_not_marked(proxy: ProxyServer) -> None:
    with proxy.openai().chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True},
    ) as raw:
        interaction_id = raw.headers["x-tuneloop-id"]
        usage = list(raw.parse())[-1].usage
    row = proxy.row(interaction_id)
    assert usage is not None
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage.prompt_tokens,
                                                               usage.completion_tokens)
    assert row["usage_estimated"] is None


def test_a_legacy_completion_stream_is_estimated_with_its_models_encoding(
        proxy: ProxyServer) -> None:
    prompt = "What is fine-tuning?\n\n###\n\n"
    with proxy.openai().completions.with_streaming_response.create(
        model="davinci-002", prompt=prompt, stream=True,
    ) as raw:
        interaction_id = raw.headers["x-tuneloop-id"]
        text = "".join(c.choices[0].text for c in raw.parse() if c.choices)
    row = proxy.row(interaction_id)
    assert row["prompt_tokens"] == tokens("cl100k_base", prompt)
    assert row["completion_tokens"] == tokens("cl100k_base", text)
    assert row["usage_estimated"] is True


def record(n: int, **fields: object) -> dict[str, object]:
    return {"id": f"r{n}", "created_at": 1_700_000_000_000_000, "endpoint": "chat.completions",
            "model": "gpt-4o-mini", "traffic": "production", "stream": True, "tags": [],
            "status_code": 200, "request": '{"messages": []}',
            "response": '{"choices": [{"index": 0, "message": {"content": "cut sho"}}]}',
            **fields}


def test_only_stream_rows_without_usage_are_touched() -> None:
    estimator = UsageEstimator(PriceMap({}))
    untouched = to_arrow([record(1, stream=False), record(2, prompt_tokens=5),
                          record(3, endpoint="embeddings"), record(4, response=None),
                          record(5, status_code=429, response='{"error": {"message": "x"}}'),
                          record(6, status_code=None)])
    assert estimator(untouched) is untouched  # nothing to do: no copy at all
    mixed = estimator(to_arrow([record(1, stream=False), record(2, finish="upstream_cut")]))
    assert mixed["usage_estimated"].to_pylist() == [None, True]
    # a cut stream is estimated from what it had sent; no price known, so no cost
    assert mixed["completion_tokens"].to_pylist() == [None, tokens("o200k_base", "cut sho")]
    assert mixed["cost_usd"].to_pylist() == [None, None]
    assert mixed.schema == untouched.schema and estimator.estimated == 1


def test_legacy_prompts_in_every_shape() -> None:
    def count(text: str) -> int:
        return len(text.split())

    assert legacy_prompt_tokens(count, "a b c") == 3
    assert legacy_prompt_tokens(count, ["a b", "c"]) == 3
    assert legacy_prompt_tokens(count, [1, 2, 3, 4]) == 4  # token arrays are their length
    assert legacy_prompt_tokens(count, [[1, 2], [3]]) == 3
    assert legacy_prompt_tokens(count, None) == 0


def test_with_a_worker_the_counting_happens_there() -> None:
    """Loading an encoding parses its file in Python for half a second: in the server process
    that would hold the GIL the event loop needs."""
    worker = ComputeWorker()
    try:
        estimator = UsageEstimator(PriceMap({}), worker)
        before = load_encoding.cache_info()
        table = estimator(to_arrow([record(1, model="gpt-3.5-turbo")]))
        assert load_encoding.cache_info() == before  # no tokenizer touched in this process
        assert worker.calls == 1 and worker.failures == 0
        assert table["completion_tokens"].to_pylist() == [tokens("cl100k_base", "cut sho")]
    finally:
        worker.close()


STRIP_BASE = "gpt-4o-mini"
STRIP_FT = "ft:gpt-4o-mini-2024-07-18:acme::strip"
STRIP_SYSTEM = "You are Acme's support agent. Follow the rules carefully. " * 30
STRIP_PREFIX = "Customer says: "
STRIP_PRICES = {STRIP_BASE: {"input_per_1m": 1.00, "output_per_1m": 2.00},
                "ft:gpt-4o-mini-2024-07-18": {"input_per_1m": 3.00, "output_per_1m": 6.00}}


def test_a_stripped_stream_is_billed_for_what_its_target_received(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    """A target whose route strips the template is sent only the question: its streamed
    answers are estimated (and priced, and saved against the baseline) from that, not from
    the full prompt the app sent."""
    proxy = proxy_factory(prices=STRIP_PRICES)
    admin = proxy.admin()
    admin.freeze_template("acme", {"system_prompt": STRIP_SYSTEM, "user_prefix": STRIP_PREFIX})
    admin.put_routes({"acme": {"targets": [
        {"model": STRIP_BASE, "weight": 50},
        {"model": STRIP_FT, "weight": 50,
         "transforms": [{"type": "strip_template", "template": "acme-v1"}]}]}})
    client = proxy.openai()
    ids = []
    for n in range(16):
        with client.chat.completions.with_streaming_response.create(
            model="acme", stream=True, extra_headers={"x-tuneloop-user": f"u{n}"},
            messages=[{"role": "system", "content": STRIP_SYSTEM},
                      {"role": "user", "content": f"{STRIP_PREFIX}question {n}?"}],
        ) as raw:
            ids.append(raw.headers["x-tuneloop-id"])
            list(raw.parse())
    rows = [proxy.row(i) for i in ids]
    served = Counter(row["upstream_model"] for row in rows)
    assert served[STRIP_BASE] and served[STRIP_FT]

    def count(text: str) -> int:
        return tokens("o200k_base", text)

    for n, row in enumerate(rows):
        assert row["usage_estimated"] is True and row["response"]["usage"] is None
        question = f"question {n}?"
        answer = count(row["response"]["choices"][0]["message"]["content"])
        if row["upstream_model"] == STRIP_FT:  # by hand: 3 priming + 3 + "user" + question
            assert row["sent_request"]["messages"] == [{"role": "user", "content": question}]
            prompt = 3 + 3 + count("user") + count(question)
            cost = (prompt * 3.00 + answer * 6.00) / 1e6
        else:  # the app's request as sent: system prompt and wrapped question
            assert row["sent_request"] is None
            prompt = 3 + 3 + count("system") + count(STRIP_SYSTEM) + 3 + count("user") \
                + count(STRIP_PREFIX + question)
            cost = (prompt * 1.00 + answer * 2.00) / 1e6
        assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, answer)
        assert row["cost_usd"] == pytest.approx(cost, abs=1e-12)

    report = admin.savings("acme")
    base, ft = report["targets"]
    assert (base["target"], ft["target"]) == (STRIP_BASE, STRIP_FT)
    assert ft["prompt_tokens_per_request"] < 20 < 300 < base["prompt_tokens_per_request"]
    by_target = {t: [r for r in rows if r["upstream_model"] == t] for t in served}
    mean_cost = {t: sum(r["cost_usd"] for r in rs) / len(rs) for t, rs in by_target.items()}
    assert ft["saved_usd_per_request"] == pytest.approx(
        mean_cost[STRIP_BASE] - mean_cost[STRIP_FT], abs=1e-9)
    assert ft["saved_usd_per_request"] > 0
