"""Path SSRF: nothing in a request path can change where the proxy sends it, and odd paths are
refused with an OpenAI-shaped 400 before any byte leaves the proxy."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import UPSTREAM_KEY, ProxyServer
from tests.security.raw import exchange, json_answer, openai_error, recorder

CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode()


def test_an_encoded_prefix_cannot_send_the_request_to_another_host(
    proxy_factory: Callable[..., ProxyServer],
) -> None:
    with recorder() as upstream, recorder() as target:
        # an upstream URL without a path: the suffix used to be glued onto the authority
        proxy = proxy_factory(upstream=upstream.url, openai_api_key=UPSTREAM_KEY)
        response = exchange(proxy.url, get(f"/%76%31%2F@127.0.0.1:{target.port}/models"))
        assert response is not None and response.status == 400
        assert openai_error(response)["code"] == "invalid_path"
        assert target.requests == [] and upstream.requests == []


@pytest.mark.parametrize("path", [
    "/v1/../admin/keys",
    "/v1/%2e%2e/admin/keys",
    "/v1/models/%2E%2E/%2e%2e/admin",
    "/v1/./models",
    "/v1/files%2F..%2Fadmin",
    "/v1/files%2fx",
    "/v1/files%5C..%5Cadmin",
    "/v1/files/%5cx",
    "/v1/models/a@127.0.0.1",
    "/v1//127.0.0.1/models",
    "/v1/files/%2525x",
    "/v1/files/%00x",
    "/v1/..;/admin",
    "/v1/files/x;jsessionid=1",
    "/v1/files%3B/admin",
    "/v1/%EF%BC%8E%EF%BC%8E/admin",
    "/v1/files/caf%C3%A9",
])
def test_odd_paths_are_refused_before_anything_is_sent(
    proxy_factory: Callable[..., ProxyServer], path: str,
) -> None:
    with recorder() as upstream:
        proxy = proxy_factory(upstream=upstream.url + "/v1", openai_api_key=UPSTREAM_KEY)
        response = exchange(proxy.url, get(path))
        assert response is not None and response.status == 400, response
        assert openai_error(response)["code"] == "invalid_path"
        assert upstream.requests == []
        # the normal paths still go where they should, with their query
        ok = exchange(proxy.url, get("/v1/models/ft:gpt-4o-mini:acme::x1?a=1"))
        assert ok is not None and ok.status == 200
        assert upstream.requests[0].startswith(
            b"GET /v1/models/ft:gpt-4o-mini:acme::x1?a=1 HTTP/1.1\r\n")


def test_a_logged_endpoint_written_with_an_encoded_slash_is_refused(
    proxy_factory: Callable[..., ProxyServer],
) -> None:
    with recorder(json_answer(b"{}")) as upstream:
        proxy = proxy_factory(upstream=upstream.url + "/v1", openai_api_key=UPSTREAM_KEY)
        request = (b"POST /v1/chat%2Fcompletions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
                   b"content-type: application/json\r\ncontent-length: "
                   + str(len(CHAT)).encode() + b"\r\n\r\n" + CHAT)
        response = exchange(proxy.url, request)
        assert response is not None and response.status == 400
        assert openai_error(response)["code"] == "invalid_path"
        assert upstream.requests == []


def test_the_query_string_never_changes_the_path(
    proxy_factory: Callable[..., ProxyServer],
) -> None:
    with recorder() as upstream:
        proxy = proxy_factory(upstream=upstream.url + "/v1", openai_api_key=UPSTREAM_KEY)
        response = exchange(proxy.url, get("/v1/files?/../../admin&b=%2F..%2Fadmin"))
        assert response is not None and response.status == 200
        # the path is the one checked; the query follows the first "?" untouched
        assert upstream.requests[0].startswith(
            b"GET /v1/files?/../../admin&b=%2F..%2Fadmin HTTP/1.1\r\n")
