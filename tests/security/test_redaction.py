"""Redaction as an attacker (or a careless app) writes personal data: card numbers with dots,
Unicode hyphens, no-break spaces or non-ASCII digits, internationalised e-mail addresses, and
personal data in every place a string is stored (user and session headers, tags, metadata
keys, the feedback comment, upstream error messages)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from proxy.redaction import Redactor
from tests.conftest import ProxyServer
from tests.fakes.server import serve_app
from tests.store_support import readable

ALL = ["email", "phone", "card"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4242.4242.4242.4242 now", "card [CARD] now"),
        ("card 4242\u20104242\u20104242\u20104242", "card [CARD]"),  # U+2010 hyphen
        ("card 4242\u00a04242\u00a04242\u00a04242.", "card [CARD]."),  # no-break space
        ("card 4242\u20134242\u20134242\u20134242", "card [CARD]"),  # en dash
        ("card \uff14\uff12\uff14\uff12 \uff14\uff12\uff14\uff12 \uff14\uff12\uff14\uff12 "
         "\uff14\uff12\uff14\uff12", "card [CARD]"),  # full-width digits
        ("card \u0664\u0662\u0664\u0662\u0664\u0662\u0664\u0662\u0664\u0662\u0664\u0662"
         "\u0664\u0662\u0664\u0662", "card [CARD]"),  # Arabic-Indic digits
        ("card 4111 1111 1111 1111 exp 12/27", "card [CARD] exp 12/27"),
        ("write to müller@bücher.de today", "write to [EMAIL] today"),
        ("write to 用户@例子.广告", "write to [EMAIL]"),
        ("write to jane\uff20example.com", "write to [EMAIL]"),  # full-width @
        ("call +1\u2010415\u2010555\u20100132", "call [PHONE]"),
        ("call \uff0b\uff14\uff14 20 7946 0958", "call [PHONE]"),
        # still left alone
        ("order 4242.4242.4242.4243", "order 4242.4242.4242.4243"),  # Luhn fails
        ("on 2024-01-15 at 12:30, v1.2.3.4 on 192.168.1.100",
         "on 2024-01-15 at 12:30, v1.2.3.4 on 192.168.1.100"),
        ("epoch 1700000000, build 20240115", "epoch 1700000000, build 20240115"),
        ("email me @ noon", "email me @ noon"),
    ],
)
def test_separators_unicode_digits_and_idn_addresses(text: str, expected: str) -> None:
    assert Redactor(ALL).text(text) == expected


CARD = "4111{0}1111{0}1111{0}1111"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # invisible characters between the digits: zero-width space, non-joiner, joiner, word
        # joiner, BOM, soft hyphen; combining marks on the digits
        *((f"card {CARD.format(c)} now", "card [CARD] now")
          for c in ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad")),
        ("card 4\u03011\u03011\u03011111111111111 now", "card [CARD] now"),
        ("card 4111\u20e31111\u20e31111\u20e31111", "card [CARD]"),  # enclosing keycap
        # separator-like punctuation between groups
        *((f"card {CARD.format(c)} now", "card [CARD] now")
          for c in ("_", ",", ":", "|", "*", "+", "\u30fc", " -- ", ", ", " | ")),
        # e-mail addresses with invisible characters inside, upper-case punycode domains
        ("mail jane\u200b.doe@example.com now", "mail [EMAIL] now"),
        ("mail user\u200b@example.com now", "mail [EMAIL] now"),
        ("mail user@ex\u00adample.com now", "mail [EMAIL] now"),
        ("mail user@example.XN--P1AI now", "mail [EMAIL] now"),
        ("mail user@example.xn--p1ai now", "mail [EMAIL] now"),
        ("mail j\u0301ane@example.com now", "mail [EMAIL] now"),  # combining acute
        # phone numbers with zero-width separators, U+2024 one dot leader, underscores
        ("phone 415\u200b555\u200b2671 now", "phone [PHONE] now"),
        ("phone +1\u2024415\u2024555\u20242671 now", "phone [PHONE] now"),
        ("phone 415_555_2671 now", "phone [PHONE] now"),
    ],
)
def test_invisible_characters_and_odd_separators_hide_nothing(text: str, expected: str) -> None:
    assert Redactor(ALL).text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6]",  # a list of numbers
        "| 4 | 1 | 1 | 1 | 1 | 1 | 1 | 1 | 1 | 1 | 1 | 1 | 1 | 1 | 1 | 1 |",  # a table
        "at 12:30:45 and 13:45:10 on 2024:01:15",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "total 1,234,567,890 units",
        "caf\u00e9 au lait, na\u00efve r\u00e9sum\u00e9 \u200bhello\u200d",
    ],
)
def test_the_new_separators_leave_lists_times_and_text_alone(text: str) -> None:
    """Guards for the fix above (these pass on the code before it too): `,` `:` `|` join
    only groups of 3 digits or more, and invisible characters elsewhere are kept."""
    assert Redactor(ALL).text(text) == text


def test_card_numbers_as_json_integers() -> None:
    redacted = Redactor(ALL).value({"seed": 4111111111111111, "n": [-5500000000000004],
                                    "order": 4111111111111112, "phone": 4155552671,
                                    "ts": 1700000000000, "flag": True, "x": 1.5})
    assert redacted == {"seed": "[CARD]", "n": ["[CARD]"], "order": 4111111111111112,
                        "phone": 4155552671, "ts": 1700000000000, "flag": True, "x": 1.5}
    assert Redactor(["email", "phone"]).value(4111111111111111) == 4111111111111111


def test_bypasses_through_a_real_proxy(proxy_factory: Callable[..., ProxyServer]) -> None:
    proxy = proxy_factory(redact=ALL)
    secrets = {"zero-width card": CARD.format("\u200b"), "comma card": CARD.format(","),
               "zero-width mail": "jane\u200b.doe@example.com",
               "punycode mail": "user@example.XN--P1AI", "phone": "415_555_2671"}
    raw = proxy.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", seed=4111111111111111,
        messages=[{"role": "user", "content": text} for text in secrets.values()])
    row = proxy.row(raw.headers["x-tuneloop-id"])
    request = row["request"] if isinstance(row["request"], dict) else orjson.loads(row["request"])
    assert [m["content"] for m in request["messages"]] == [
        "[CARD]", "[CARD]", "[EMAIL]", "[EMAIL]", "[PHONE]"]
    assert request["seed"] == "[CARD]"
    assert text_columns_containing(proxy, {**secrets, "seed": "4111111111111111"}) == {
        name: [] for name in [*secrets, "seed"]}


def test_metadata_keys_are_redacted_and_kept_apart() -> None:
    assert Redactor(ALL).value({"bob@example.com": "a", "carl@example.com": "b", "n": 1}) == {
        "[EMAIL]": "a", "[EMAIL]#2": "b", "n": 1}


def error_upstream() -> Starlette:
    """An upstream whose error message quotes the request back (as real ones do)."""
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        quoted = body["messages"][0]["content"]
        return JSONResponse({"error": {"message": f"cannot process {quoted!r}",
                                       "type": "invalid_request_error", "code": None}}, 400)
    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture
def failing_upstream() -> Iterator[str]:
    with serve_app(error_upstream()) as url:
        yield url + "/v1"


SECRETS = {
    "user e-mail": "m\u00fcller@b\u00fccher.de",
    "session phone": "+44 20 7946 0958",
    "tag card": "4242-4242-4242-4242",
    "metadata key": "zoe@example.org",
    "feedback": "ylva@example.net",
    "error card": "5500.0000.0000.0004",
    "dotted card": "4000.0566.5566.5556",
}


def text_columns_containing(proxy: ProxyServer, needles: dict[str, str]) -> dict[str, list[str]]:
    """Per needle, the text columns of every table holding it (one SQL query: DuckDB
    compresses strings, so a byte grep of the file would prove nothing)."""
    columns = readable(proxy.sql(
        "SELECT table_name, column_name FROM information_schema.columns WHERE "
        "table_schema = 'main' AND (data_type LIKE 'VARCHAR%' OR data_type = 'JSON' OR "
        "data_type LIKE '%[]')"))
    assert columns
    values = ", ".join(f"('{name}', '{needle}')" for name, needle in needles.items())
    query = " UNION ALL ".join(
        f"SELECT DISTINCT n.label_, '{table}.{column}' FROM \"{table}\", (VALUES {values}) "
        f"n(label_, needle_) WHERE strpos(CAST(\"{table}\".\"{column}\" AS VARCHAR), "
        f"n.needle_) > 0"
        for table, column in columns)
    found: dict[str, list[str]] = {name: [] for name in needles}
    for name, where in proxy.sql(query):
        found[name].append(where)
    return found


def test_every_stored_string_is_redacted(proxy_factory: Callable[..., ProxyServer],
                                         failing_upstream: str) -> None:
    proxy = proxy_factory(redact=ALL)
    headers = {
        "x-tuneloop-user": SECRETS["user e-mail"].encode("utf-8"),  # as an app sends UTF-8
        "x-tuneloop-session": SECRETS["session phone"],
        "x-tuneloop-tags": f"support,{SECRETS['tag card']}",
        "authorization": "Bearer sk-test",
    }
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        answered = http.post("/v1/chat/completions", headers=headers, json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"pay with {SECRETS['dotted card']}"}],
            "metadata": {SECRETS["metadata key"]: "vip"}})
        assert answered.status_code == 200, answered.text
        interaction = answered.headers["x-tuneloop-id"]
        proxy.row(interaction)
        feedback = http.post("/v1/feedback", json={
            "id": interaction, "score": 1, "comment": f"mail {SECRETS['feedback']} back"})
        assert feedback.status_code == 201, feedback.text
    failing = proxy_factory(redact=ALL, upstream=failing_upstream,
                            db=proxy.settings.db.with_name("errors.duckdb"))
    with httpx.Client(base_url=failing.url, timeout=30) as http:
        refused = http.post("/v1/chat/completions", headers={"authorization": "Bearer k"}, json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"card {SECRETS['error card']}"}]})
    assert refused.status_code == 400
    assert SECRETS["error card"] in refused.text  # the app still gets its answer as it was
    failing.row(refused.headers["x-tuneloop-id"])

    assert text_columns_containing(proxy, {"tag": "support"})["tag"]  # the search finds
    assert text_columns_containing(proxy, SECRETS) == {name: [] for name in SECRETS}
    assert text_columns_containing(failing, SECRETS) == {name: [] for name in SECRETS}
    row = proxy.row(interaction)
    assert row["user_id"].startswith("[ID:") and row["session_id"].startswith("[ID:")
    assert "[CARD]" in row["tags"] and "support" in row["tags"]
    assert failing.row(refused.headers["x-tuneloop-id"])["error"].count("[CARD]") == 1


def test_a_redacted_user_can_still_be_forgotten(proxy_factory: Callable[..., ProxyServer]
                                                ) -> None:
    proxy = proxy_factory(redact=ALL)
    client = proxy.openai()
    ids = []
    for user in ("ann@example.com", "ann@example.com", "bo@example.com"):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}],
            extra_headers={"x-tuneloop-user": user})
        ids.append(raw.headers["x-tuneloop-id"])
    users: list[Any] = [proxy.row(i)["user_id"] for i in ids]
    assert users[0] == users[1] != users[2]  # a stable pseudonym per user
    assert not any("@" in user for user in users)
    assert proxy.admin().forget("ann@example.com")["deleted"]["interactions"] == 2
    assert proxy.sql("SELECT id FROM interactions") == [[ids[2]]]
