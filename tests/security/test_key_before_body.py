"""With issued keys on, a request without a valid key is refused before its body is read:
a stranger can't make the proxy read and parse 32 MiB (or wait out a trickled body)."""

from __future__ import annotations

from typing import Any

import httpx


def test_a_stranger_gets_401_before_the_body_is_read(proxy_factory: Any) -> None:
    proxy = proxy_factory(issue_keys=True, openai_api_key="sk-held-by-the-proxy")
    answer = httpx.post(proxy.url + "/v1/chat/completions", content=b"{not json",
                        headers={"authorization": "Bearer sk-someone-elses",
                                 "content-type": "application/json"}, timeout=10)
    assert answer.status_code == 401, answer.text
    assert proxy.upstream.state.requests == []
