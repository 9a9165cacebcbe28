"""A target with `replace_system_prompt` beside a template WITHOUT a system prompt: the app's
own system message is per-request context, not template. The proxy must not delete it: the
request is a template mismatch `own_system_prompt` (as export skips such examples) and the
target gets it as the app sent it, on chat and on /v1/responses (`instructions`) alike."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import ProxyServer, last_sent, module_proxy

FT = "ft:gpt-4o-mini-2024-07-18:acme::own"
OWN = "Tenant 42: VIP customer, refunds ALLOWED up to $500."
ROUTE = {"targets": [{"model": FT, "transforms": [
    {"type": "strip_template", "template": "q-v1"},
    {"type": "replace_system_prompt", "system_prompt": "Acme support."}]}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    with module_proxy(tmp_path_factory.mktemp("own_system")) as proxy:
        proxy.admin().freeze_template("q", {"user_prefix": "Q: "})
        proxy.admin().put_routes({"own-bot": ROUTE})
        yield proxy


def test_chat_with_its_own_system_message_is_a_mismatch_sent_as_the_app_sent_it(
        server: ProxyServer) -> None:
    messages = [{"role": "system", "content": OWN}, {"role": "user", "content": "Q: refund?"}]
    raw = server.openai().chat.completions.with_raw_response.create(
        model="own-bot", messages=messages)  # type: ignore[arg-type]
    assert last_sent(server, FT)["messages"] == messages  # the tenant's context reached the model
    row = server.row(raw.headers["x-tuneloop-id"])
    assert row["route"]["template_mismatch"] == "own_system_prompt"


def test_chat_without_a_system_message_still_gets_the_replacement(server: ProxyServer) -> None:
    raw = server.openai().chat.completions.with_raw_response.create(
        model="own-bot", messages=[{"role": "user", "content": "Q: refund?"}])
    assert last_sent(server, FT)["messages"] == [{"role": "system", "content": "Acme support."},
                                             {"role": "user", "content": "refund?"}]
    assert "template_mismatch" not in server.row(raw.headers["x-tuneloop-id"])["route"]


def test_responses_instructions_are_not_replaced(server: ProxyServer) -> None:
    raw = server.openai().responses.with_raw_response.create(
        model="own-bot", instructions=OWN, input="Q: refund?")
    sent = last_sent(server, FT)
    assert sent["instructions"] == OWN and sent["input"] == "Q: refund?"
    row = server.row(raw.headers["x-tuneloop-id"])
    assert row["route"]["template_mismatch"] == "own_system_prompt"
