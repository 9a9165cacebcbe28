"""The row of a transformed request on both stores: `sent_request` stored beside `request`,
redacted like it when redaction is on."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import ProxyServer

pytestmark = pytest.mark.parametrize("store", ["duckdb", "postgres"], indirect=True)


def test_the_row_keeps_what_the_target_received_redacted(
    proxy_factory: Callable[..., ProxyServer],
) -> None:
    proxy = proxy_factory(redact=["email"], redaction_key="ab" * 32)
    proxy.admin().put_routes({"qa": {"targets": [{"model": "davinci-002", "transforms": [
        {"type": "legacy_separator", "separator": "\n\n###\n\n"},
        {"type": "stop", "stop": "###"}]}]}})
    raw = proxy.openai().completions.with_raw_response.create(
        model="qa", prompt="Mail jane.doe@example.com about it")
    sent = proxy.upstream.state.requests[-1].json
    assert sent["prompt"] == "Mail jane.doe@example.com about it\n\n###\n\n"  # upstream: as is
    row = proxy.row(raw.headers["x-tuneloop-id"])
    assert row["request"]["prompt"] == "Mail [EMAIL] about it"
    assert row["sent_request"] == {"model": "davinci-002", "stop": "###",
                                   "prompt": "Mail [EMAIL] about it\n\n###\n\n"}
    found = proxy.sql("SELECT count(*) FROM interactions WHERE sent_request IS NOT NULL")
    assert found == [[1]]
