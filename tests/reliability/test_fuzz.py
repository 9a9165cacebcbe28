"""Property-based fuzzing of what clients send: every answer is a well-formed 4xx or a correct
pass-through, never a 500 or a hang, and the server stays up."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ADMIN_TOKEN, ProxyServer

pytestmark = pytest.mark.reliability

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False), st.text(max_size=50),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
weird_bytes = st.one_of(
    st.binary(max_size=300),
    st.just(b"\xff\xfe\x00garbage"),
    st.just(b'{"model": "gpt-4o-mini", "messages": "\x00"}'),
    st.just(b"[" * 5000 + b"]" * 5000),
    st.just(b'{"a":' * 3000 + b"1" + b"}" * 3000),
    st.just(b'{"model": "' + b"x" * 200_000 + b'"}'),
    st.just(b'{"model": 5, "messages": [{"role": 7}]}'),
    st.just(b'{"model": "gpt-4o-mini", "stream": "yes", "messages": []}'),
    st.just(b'{"model": "gpt-4o-mini", "n": -1, "messages": [{"role": "user"}]}'),
    st.just(b'\xed\xa0\x80'),  # a lone surrogate: invalid UTF-8
)
chat_like = st.fixed_dictionaries(
    {"model": st.one_of(st.text(max_size=30), st.integers(), st.none(),
                        st.just("gpt-4o-mini")),
     "messages": st.one_of(json_values, st.lists(
         st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "tool", "bogus"]),
                                "content": json_values}), max_size=3))},
    optional={"stream": json_values, "n": json_values, "metadata": json_values,
              "tools": json_values, "stream_options": json_values},
)


def well_formed(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.headers.get("x-fake") == "1", (
        response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), dict), body
        assert body["error"].get("message"), body


@pytest.fixture
def client(proxy: ProxyServer) -> Any:
    with httpx.Client(base_url=proxy.url, timeout=20,
                      headers={"authorization": "Bearer k"}) as http:
        yield http


ENDPOINTS = ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings"]


@FUZZ
@given(endpoint=st.sampled_from(ENDPOINTS), body=weird_bytes)
def test_raw_bodies(client: httpx.Client, endpoint: str, body: bytes) -> None:
    well_formed(client.post(endpoint, content=body))


@FUZZ
@given(endpoint=st.sampled_from(ENDPOINTS), payload=chat_like)
def test_wrong_types_in_json_bodies(client: httpx.Client, endpoint: str,
                                    payload: dict[str, Any]) -> None:
    response = client.post(endpoint, content=json.dumps(payload).encode())
    well_formed(response)


@FUZZ
@given(headers=st.dictionaries(
    st.sampled_from(["x-tuneloop-tags", "x-tuneloop-user", "x-tuneloop-session",
                     "x-tuneloop-no-log", "x-tuneloop-traffic", "content-length"]),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
            max_size=400),
    max_size=4))
def test_weird_tuneloop_headers(client: httpx.Client, headers: dict[str, str]) -> None:
    headers.pop("content-length", None)
    response = client.post("/v1/chat/completions", headers=headers,
                           json={"model": "gpt-4o-mini", "messages": []})
    well_formed(response)


ADMIN_QUERIES = st.dictionaries(
    st.sampled_from(["limit", "cursor", "model", "status_code", "tag", "user", "session",
                     "since", "until", "has_error", "traffic", "endpoint", "review", "q",
                     "min_score"]),
    st.one_of(st.text(max_size=60), st.integers(min_value=-(2**64), max_value=2**64).map(str),
              st.just("9" * 400), st.just("-1"), st.just("0"), st.just("\x00"),
              st.just("2024-13-45T99:99:99")),
    max_size=5,
)


@FUZZ
@given(params=ADMIN_QUERIES)
def test_admin_query_strings(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.get("/admin/interactions", params=params,
                          headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    well_formed(response)
    if response.status_code == 200:
        assert set(response.json()) == {"items", "next_cursor"}


@FUZZ
@given(path=st.sampled_from(["/admin/routes", "/admin/sql", "/admin/keys"]),
       body=st.one_of(weird_bytes, json_values.map(lambda v: json.dumps(v).encode())))
def test_admin_bodies(client: httpx.Client, path: str, body: bytes) -> None:
    method = "PUT" if path == "/admin/routes" else "POST"
    response = client.request(method, path, content=body,
                              headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    well_formed(response)


def test_server_is_still_up_after_fuzzing(client: httpx.Client) -> None:
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
