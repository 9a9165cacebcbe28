"""Optional redaction of e-mail addresses, phone numbers and card numbers before storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.redaction import Redactor

PII = "write to jane.doe@example.com, call +44 20 7946 0958, card 4111 1111 1111 1111"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail bob.smith+x@example.co.uk now", "mail [EMAIL] now"),
        ("call +33 6 12 34 56 78 or (415) 555-0132", "call [PHONE] or [PHONE]"),
        ("415.555.0132 and 415-555-0132", "[PHONE] and [PHONE]"),
        ("card 4111-1111-1111-1111", "card [CARD]"),
        ("pay 5500 0000 0000 0004.", "pay [CARD]."),
        # left alone: not Luhn-valid, dates, ids, versions, addresses, plain numbers
        ("order 1234567890123", "order 1234567890123"),
        ("on 2024-01-15 at 12:30", "on 2024-01-15 at 12:30"),
        ("id 01a2178c-bcc4-73b7", "id 01a2178c-bcc4-73b7"),
        ("v1.2.3.4 on 192.168.1.100", "v1.2.3.4 on 192.168.1.100"),
        ("epoch 1700000000, pi 3.14159", "epoch 1700000000, pi 3.14159"),
    ],
)
def test_redaction_rules(text: str, expected: str) -> None:
    assert Redactor(["email", "phone", "card"]).text(text) == expected


def test_only_the_chosen_kinds_are_redacted() -> None:
    assert Redactor(["email"]).text(PII) == (
        "write to [EMAIL], call +44 20 7946 0958, card 4111 1111 1111 1111")
    assert not Redactor([]).active
    with pytest.raises(ValueError, match="unknown"):
        Redactor(["ssn"])


def test_json_values_keep_their_shape() -> None:
    value = {"messages": [{"role": "user", "content": "a@b.io\n+1 415 555 0132"}], "n": 2}
    assert Redactor(["email", "phone"]).value(value) == {
        "messages": [{"role": "user", "content": "[EMAIL]\n[PHONE]"}], "n": 2}


def test_proxy_redacts_requests_and_streamed_responses(proxy_factory: Any,
                                                       tmp_path: Path) -> None:
    proxy = proxy_factory(redact=["email", "phone", "card"], ingest_interval_ms=3000)
    client = proxy.openai()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PII}],
        metadata={"contact": "jane.doe@example.com"})
    assert "jane.doe@example.com" in raw.parse().choices[0].message.content  # app unaffected
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": PII}]
    ) as streamed:
        stream_id = streamed.headers["x-tuneloop-id"]
        streamed_text = "".join(c.choices[0].delta.content or "" for c in streamed.parse()
                                if c.choices)
    assert "4111 1111 1111 1111" in streamed_text
    spool = b"".join(p.read_bytes() for p in proxy.settings.spool_path.glob("*.jsonl"))
    assert spool.count(b"[EMAIL]") >= 2  # still in the spool: the check below means something
    proxy.wait_logged(2)
    for interaction_id in (raw.headers["x-tuneloop-id"], stream_id):
        row = proxy.row(interaction_id)
        stored = str(row["request"]) + str(row["response"]) + str(row["metadata"])
        assert "[EMAIL]" in stored and "[PHONE]" in stored and "[CARD]" in stored
        assert "jane.doe" not in stored and "4111" not in stored and "7946" not in stored
    for secret in (b"jane.doe@example.com", b"4111 1111 1111 1111", b"7946 0958"):
        assert secret not in spool
