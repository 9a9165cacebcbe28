"""A compressed request body (`Content-Encoding: gzip`) can't be size- or depth-checked or
logged, and OpenAI's API takes bodies uncompressed: the proxy answers 415 and sends nothing
upstream, on a logged endpoint and on a passthrough upload alike."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.security.raw import exchange, openai_error, recorder, served

BODY = gzip.compress(b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}')


@pytest.mark.parametrize(("path", "content_type"), [
    ("/v1/chat/completions", "application/json"),
    ("/v1/files", "application/octet-stream"),
])
def test_a_compressed_body_gets_415_and_nothing_goes_upstream(
        tmp_path: Path, path: str, content_type: str) -> None:
    with recorder() as upstream, served(tmp_path, f"http://127.0.0.1:{upstream.port}/v1") as p:
        request = (f"POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-client\r\n"
                   f"content-type: {content_type}\r\ncontent-encoding: gzip\r\n"
                   f"content-length: {len(BODY)}\r\n\r\n").encode() + BODY
        answer = exchange(p.url, request)
        assert answer is not None and answer.status == 415, answer
        assert openai_error(answer)["code"] == "unsupported_content_encoding"
        assert upstream.requests == []
