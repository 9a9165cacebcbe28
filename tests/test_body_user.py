"""OpenAI's `user` body field fills `user_id` when no `x-tuneloop-user` header names one (issue
14): the header wins, the field still reaches the provider (OpenAI defines it), redaction's
pseudonyms and `forget` apply to it as to the header. Official SDK through a real proxy."""

from __future__ import annotations

from typing import Any

from tests.conftest import ProxyServer


def _ask(proxy: ProxyServer, **kwargs: Any) -> str:
    raw = proxy.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], **kwargs)
    return str(raw.headers["x-tuneloop-id"])


def test_the_body_user_fills_user_id_and_is_forwarded(proxy: ProxyServer) -> None:
    from_body = _ask(proxy, user="u-1234")
    both = _ask(proxy, user="u-1234", extra_headers={"x-tuneloop-user": "header-user"})
    blank = _ask(proxy, user="   ")
    assert proxy.row(from_body)["user_id"] == "u-1234"
    assert proxy.row(both)["user_id"] == "header-user"
    assert proxy.row(blank)["user_id"] is None
    sent = [r.json for r in proxy.upstream.state.requests if r.path == "/v1/chat/completions"]
    assert [body.get("user") for body in sent] == ["u-1234", "u-1234", "   "]
    # The second request names u-1234 in its body too: forgetting the person removes both.
    assert proxy.admin().forget("u-1234")["deleted"]["interactions"] == 2
    assert proxy.sql(f"SELECT count(*) FROM interactions WHERE id IN ('{from_body}', '{both}')"
                     ) == [[0]]
    assert proxy.sql(f"SELECT count(*) FROM interactions WHERE id = '{blank}'") == [[1]]


def test_a_body_user_with_an_email_is_pseudonymized(proxy_factory: Any) -> None:
    proxy = proxy_factory(redact=["email"])
    asked = _ask(proxy, user="jane.doe@example.com")
    stored = proxy.row(asked)["user_id"]
    assert stored and "jane.doe" not in stored
    assert proxy.admin().forget("jane.doe@example.com")["deleted"]["interactions"] == 1
    assert proxy.sql(f"SELECT count(*) FROM interactions WHERE id = '{asked}'") == [[0]]
