"""Text that is not valid (a lone surrogate, as a terminal's undecodable bytes become) in what
the admin client sends is a clear BadRequest naming the field, and a usage error in the CLI,
not a UnicodeEncodeError traceback (r12v LOW 5); invalid UTF-8 in a query string a 400."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, ProxyServer, both_stores
from tests.test_export_cli import run_cli
from tuneloop.client import AdminClient
from tuneloop.errors import BadRequest

pytestmark = both_stores

LONE = "ref\ud800und"


def test_the_admin_client_refuses_a_lone_surrogate_clearly(proxy: ProxyServer) -> None:
    with AdminClient(proxy.url, token=ADMIN_TOKEN) as client:
        with pytest.raises(BadRequest, match="q is not valid text"):
            client.search(LONE)
        with pytest.raises(BadRequest, match="not valid text"):
            client.next_item(reviewer="ann", filter={"q": LONE})
        assert client.search("refund")["items"] == []  # the client still works


def test_the_cli_answers_a_lone_surrogate_in_a_filter_as_a_usage_error(
        proxy: ProxyServer, tmp_path: Path) -> None:
    result = run_cli(proxy, tmp_path, "export", "--name", "x", "--filter", f"q={LONE}",
                     "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert "not valid text" in " ".join(result.output.split())


@pytest.mark.parametrize("raw", ["ref%ED%A0%80und", "ref%FFund"])
def test_invalid_utf8_in_a_query_string_is_a_400_not_an_empty_answer(
        proxy: ProxyServer, raw: str) -> None:
    """r12v LOW 6: decoded to U+FFFD, it matched nothing and answered 200 with no items (a
    dataset filter so selected nothing)."""
    answer = httpx.get(f"{proxy.url}/admin/interactions?q={raw}",
                       headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "q"
    assert "not valid UTF-8" in answer.json()["error"]["message"]
    long = httpx.get(f"{proxy.url}/admin/interactions", params={"q": "refund " * 200},
                     headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert long.status_code == 400
    assert "NUL" not in long.json()["error"]["message"]  # r12v LOW 7: only too long
