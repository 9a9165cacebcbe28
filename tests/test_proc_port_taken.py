"""The test helper that starts `tuneloop serve` never takes another server for its proxy.

A CI run failed two tests at once: the port one test's proxy was given (free a moment before)
was taken by another test's fake upstream, whose catch-all answer passed for the proxy's
health, so the first test talked to the second's fake and the second saw the first's
requests. ProxyProcess now accepts only its proxy's own health answer and starts again on
another port when its port was taken."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.fakes.server import free_port
from tests.proc import ProxyProcess
from tests.security.raw import json_answer, recorder

ANSWER = b'{"id": "x", "object": "chat.completion", "choices": []}'


def test_a_port_taken_by_another_server_is_not_taken_for_the_proxy(tmp_path: Path) -> None:
    with recorder(json_answer(ANSWER)) as squatter:
        taken = squatter.port
        process = ProxyProcess(tmp_path / "p.duckdb", f"http://127.0.0.1:{free_port()}/v1",
                               port=taken)
        with process:
            assert process.port != taken
            health = httpx.get(process.url + "/healthz", timeout=5).json()
            assert health["status"] == "ok"
    assert squatter.requests == []  # nothing was asked of it
