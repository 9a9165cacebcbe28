"""A blank admin token must not stand as the configured one: `bearer()` ignores empty tokens,
so nobody could administer the server, and nothing would say why. serve treats it as unset."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import FakeUpstream
from tests.proc import ProxyProcess


def test_blank_admin_token_gets_a_generated_one(tmp_path: Path,
                                                fake_openai: FakeUpstream) -> None:
    db = tmp_path / "tuneloop.duckdb"
    proc = ProxyProcess(db, fake_openai.base_url, {"TUNELOOP_ADMIN_TOKEN": "  "},
                        log_path=tmp_path / "serve.log").start()
    try:
        token_file = tmp_path / "tuneloop.duckdb.admin-token"
        assert token_file.is_file(), proc.log_text()[-1000:]
        token = token_file.read_text().strip()
        assert len(token) > 32
        answer = httpx.get(proc.url + "/admin/stats",
                           headers={"authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 200, answer.text
        wrong = httpx.get(proc.url + "/admin/stats", headers={"authorization": "Bearer x"},
                          timeout=10)
        assert wrong.status_code == 401
    finally:
        proc.stop()
