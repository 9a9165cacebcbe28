"""Optional redaction of personal data before anything is spooled or stored.

Every string of an interaction record goes through it: the request and the (assembled)
response (string values and object keys, never the raw JSON text, so the stored JSON stays
valid), `metadata` keys and values, tags, the error, the model names, and the
`x-tuneloop-user` / `x-tuneloop-session` values; `/v1/feedback` comments too. Detection
reads through invisible characters: format characters (zero-width space and joiners, soft
hyphen, word joiner, BOM) and combining marks.

- E-mail addresses, internationalised ones included (`müller@bücher.de`, full-width `＠`,
  punycode top-level domains in any case).
- Card numbers: 13 to 19 digits in groups separated by spaces (NBSP and the like), dots,
  hyphens (U+2010 to U+2015, U+2212, full-width, ` -- `) or slashes, or by one of
  `_ , : | * + ー ․ ·` between groups of 3 digits or more, in any script's digits
  (full-width, Arabic-Indic, ...), that pass the Luhn check (order numbers and timestamps
  don't); JSON integers of 13 to 19 digits that pass it become the string `[CARD]`.
- Phone numbers, found and checked by `phonenumbers` (Google's libphonenumber metadata):
  written with a leading `+` or `(` or at least two separators and possible for their
  country, or valid and written with a separator (so bare ids, years, dates, IPv4 addresses
  and timestamps are left alone). National numbers are read in `redact_phone_region`.

User and session ids are not replaced by a bare `[EMAIL]` (everyone would become one user and
`tuneloop forget --user` could not find anyone): an id in which something is detected becomes
`[ID:<16 hex>]`, a keyed hash (HMAC-SHA256 with a random key kept beside the database, 0600),
stable for the same id, so grouping by user and forgetting a user keep working.

Cost: a string without a digit or an `@` is passed over by two scans; see bench/redaction.py.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import secrets
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import phonenumbers

from tuneloop.config import Settings
from tuneloop.errors import ConfigError

KINDS = ("email", "phone", "card")
EMAIL = re.compile(
    r"[\w.%+'-]+[@＠](?:[^\W_](?:[\w-]{0,61}[^\W_])?[.．。｡])+"
    r"(?:(?i:xn--[a-z0-9-]{1,59})|[^\W\d_]{2,63})"  # punycode first: `xn` alone is a word
)
_SEPARATOR = "\\s.\\-/\u2010-\u2015\u2212\ufe63\uff0d\uff0e"  # \s: NBSP, thin space, ...
# punctuation that may sit alone between two digits (with a space each side at most); in a
# card, the groups it joins must have 3 digits or more (lists `1, 2, 3`, times `12:30` stay)
_ODD = "_,:|*+\u00b7\u2024\u2027\u30fb\u30fc\uff0b\uff0c\uff1a\uff3f\uff5c"
# a run of digits in groups of separators (or parentheses) with at least 7 digits
NUMBERISH = re.compile(
    rf"\d(?:(?:[{_SEPARATOR}()（）]{{0,3}}|\s?--\s?|\s?[{_ODD}]\s?)\d){{6,}}")
_LEADING = "+＋(（"  # a number's sign or parenthesis, just before its first digit
_GROUP = re.compile(r"\d+")
_DIGIT = re.compile(r"\d")
_CLASSIC = frozenset(" .-/()")  # separators of a card's groups whatever their length
ISO_DATE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}")
IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_PHONE_SEPARATORS = re.compile(r"[\s().\-/]+")
# the same length out as in: Unicode digits to ASCII, odd hyphens and spaces to plain ones
_ASCII = {**{ord(c): "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d"
             "_\u30fc\uff3f"},
          **{ord(c): "." for c in "\u00b7\u2024\u2027\u30fb"},
          ord("＋"): "+", ord("（"): "(", ord("）"): ")", ord("．"): "."}
JSON_COLUMNS = ("request", "sent_request", "response", "metadata")
TEXT_COLUMNS = ("model", "upstream_model", "error", "source_id")
ID_COLUMNS = ("user_id", "session_id")
CARD_INT = (10**12, 10**19)  # a JSON integer of 13 to 19 digits may be a card number
# Format characters (category Cf: zero-width space and joiners, soft hyphen, word joiner,
# BOM, bidi marks, ...) and combining marks (Mn, Mc, Me) are invisible or attach to the
# character before: put between the digits of a card or inside an e-mail address they hide
# it from the patterns.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Mn", "Mc", "Me"})
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
Span = tuple[int, int, str]


@functools.cache
def invisible() -> re.Pattern[str]:
    """The class of format characters and combining marks below U+10000 (built once, ~30
    ms). A class of BMP characters only is matched from a bitmap (~5 ns a character); with
    astral ones in it the regex engine scans a list of ranges (~0.5 µs a character)."""
    chars = [chr(c) for c, category in enumerate(map(unicodedata.category,
                                                     map(chr, range(0x10000))))
             if category in _INVISIBLE_CATEGORIES]
    return re.compile("[" + "".join(re.escape(c) for c in chars) + "]")


def _visible(value: str, fill: str) -> str:
    """`value` with every format character and combining mark replaced by `fill` (a
    same-length view: an index in it is the same index in `value`)."""
    view = invisible().sub(fill, value)
    if _ASTRAL.search(view) is None:
        return view
    return _ASTRAL.sub(lambda m: fill if unicodedata.category(m.group())
                       in _INVISIBLE_CATEGORIES else m.group(), view)


def _ascii(text: str) -> str:
    out = []
    for char in text:
        if char.isdecimal() and not char.isascii():
            out.append(str(unicodedata.decimal(char)))
        elif char.isspace():
            out.append(" ")
        else:
            out.append(_ASCII.get(ord(char), char))
    return "".join(out)


def _enough_digits(value: str) -> bool:
    """Seven digits or more (the fewest a phone number has); C-speed for ASCII text."""
    if len(value) < 7:
        return False
    if value.isascii():
        return sum(map(value.count, "0123456789")) >= 7
    return len(_DIGIT.findall(value)) >= 7


def _email_spans(value: str) -> list[Span]:
    """E-mail addresses; the pattern runs only on the words around each `@` (run on the whole
    text it costs ~0.2 µs a character)."""
    spans: list[Span] = []
    last = 0
    for at in sorted(_positions(value, "@") + _positions(value, "＠")):
        if at < last:
            continue
        start = max(last, at - 320, *(value.rfind(c, 0, at) + 1 for c in " \n\t\r"))
        ends = [e for e in (value.find(c, at) for c in " \n\t\r") if e != -1]
        end = min([len(value), at + 320, *ends])
        spans.extend((m.start(), m.end(), "[EMAIL]") for m in EMAIL.finditer(value, start, end))
        last = end
    return spans


def _positions(value: str, char: str) -> list[int]:
    found, at = [], value.find(char)
    while at != -1:
        found.append(at)
        at = value.find(char, at + 1)
    return found


def _replace(value: str, spans: list[Span]) -> str:
    out, last = [], 0
    for start, end, token in sorted(spans):
        if start < last:
            continue
        out.append(value[last:start])
        out.append(token)
        last = end
    out.append(value[last:])
    return "".join(out)


def luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _joinable(text: str, left: tuple[int, int], right: tuple[int, int]) -> bool:
    """Two digit groups may be parts of one card: separated by spaces, dots, hyphens,
    slashes or parentheses, or else (`,` `:` `|` `*` `+` ...) both of 3 digits or more."""
    if _CLASSIC.issuperset(text[left[1]:right[0]]):
        return True
    return left[1] - left[0] >= 3 and right[1] - right[0] >= 3


def _card_spans(text: str) -> list[tuple[int, int]]:
    """Spans of consecutive digit groups of `text` (ASCII digits) that make a card number."""
    groups = [(m.start(), m.end()) for m in _GROUP.finditer(text)]
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(groups):
        found = None
        digits = ""
        for j in range(i, len(groups)):
            if j > i and not _joinable(text, groups[j - 1], groups[j]):
                break
            digits += text[groups[j][0]:groups[j][1]]
            if len(digits) > 19:
                break
            if len(digits) >= 13 and luhn(digits):
                found = j
        if found is None:
            i += 1
            continue
        spans.append((groups[i][0], groups[found][1]))
        i = found + 1
    return spans


class Redactor:
    def __init__(self, kinds: Iterable[str], *, region: str = "US", key: bytes = b""):
        wanted = set(kinds)
        unknown = wanted - set(KINDS)
        if unknown:
            raise ValueError(f"unknown redaction kinds: {sorted(unknown)}")
        self._email = "email" in wanted
        self._phone = "phone" in wanted
        self._card = "card" in wanted
        self._region = region.upper()
        self._key = key
        if self.active:
            invisible()  # built at start-up, not on the first request that needs it

    @property
    def active(self) -> bool:
        return self._email or self._phone or self._card

    # -- strings ---------------------------------------------------------------------------
    def text(self, value: str) -> str:
        """`value` with what is detected replaced. Detection runs on same-length views of it
        (format characters and combining marks read as a letter inside an e-mail address and
        as a space among digits), so a replacement covers the original characters."""
        emails = self._email and ("@" in value or "＠" in value)
        numbers = (self._phone or self._card) and _enough_digits(value)
        if not (emails or numbers):
            return value
        plain = value.isascii()
        spans: list[Span] = []
        view = value
        if emails:
            spans = _email_spans(value if plain else _visible(value, "a"))
            for start, end, _ in spans:  # no phone or card inside an address
                view = view[:start] + "x" * (end - start) + view[end:]
        if numbers:
            if not plain:
                view = _visible(view, " ")
            spans += self._number_spans(view)
        return _replace(value, spans) if spans else value

    def _number_spans(self, view: str) -> list[Span]:
        spans: list[Span] = []
        last = 0
        for match in NUMBERISH.finditer(view):
            start = match.start()
            if start > last and view[start - 1] in _LEADING:
                start -= 1
            last = match.end()
            plain = _ascii(view[start:last])
            done = 0
            for card_start, card_end in (_card_spans(plain) if self._card else []):
                spans += self._phone_spans(plain[done:card_start], start + done)
                spans.append((start + card_start, start + card_end, "[CARD]"))
                done = card_end
            spans += self._phone_spans(plain[done:], start + done)
        return spans

    def _phone_spans(self, plain: str, offset: int) -> list[Span]:
        if not self._phone or sum(c.isdigit() for c in plain) < 7:
            return []
        if ISO_DATE.search(plain) or IPV4.match(plain.strip()):
            return []
        return [(offset + found.start, offset + found.end, "[PHONE]")
                for found in phonenumbers.PhoneNumberMatcher(
                    plain, self._region, leniency=phonenumbers.Leniency.POSSIBLE)
                if self._is_phone(found.raw_string, found.number)]

    @staticmethod
    def _is_phone(raw: str, number: phonenumbers.PhoneNumber) -> bool:
        digits = sum(c.isdigit() for c in raw)
        if not 7 <= digits <= 15:
            return False
        separators = len(_PHONE_SEPARATORS.findall(raw.strip("+")))
        if raw.startswith(("+", "(")) or separators >= 2:
            return bool(phonenumbers.is_possible_number(number))
        return separators >= 1 and bool(phonenumbers.is_valid_number(number))

    # -- JSON values and records -----------------------------------------------------------
    def value(self, value: Any) -> Any:
        """A copy of a JSON value with every string redacted, object keys included (two keys
        that redact alike stay apart: `[EMAIL]`, `[EMAIL]#2`)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                name = self.text(key) if isinstance(key, str) else key
                if name in out:
                    number = 2
                    while f"{name}#{number}" in out:
                        number += 1
                    name = f"{name}#{number}"
                out[name] = self.value(item)
            return out
        if (self._card and type(value) is int and CARD_INT[0] <= abs(value) < CARD_INT[1]
                and luhn(str(abs(value)))):
            return "[CARD]"  # `"seed": 4111111111111111`: the number becomes a string
        return value

    def identity(self, value: str) -> str:
        """A user or session id: as it is when nothing is detected in it, else a stable keyed
        pseudonym."""
        if self.text(value) == value:
            return value
        return self._pseudonym(value)

    def _pseudonym(self, value: str) -> str:
        digest = hmac.new(self._key, value.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return f"[ID:{digest.hexdigest()[:16]}]"

    def stored_names(self, user: str) -> list[str]:
        """Every name a user id may be stored under: as sent and, with redaction on, its
        pseudonym; and the same for the form older versions stored non-ASCII ids in
        (their UTF-8 bytes read as latin-1: `müller` as `mÃ¼ller`), so old rows are found."""
        forms = {user, user.encode("utf-8", "surrogatepass").decode("latin-1")}
        if self.active:
            forms |= {self._pseudonym(form) for form in forms}
        return sorted(forms)

    def tags(self, tags: Iterable[str]) -> list[str]:
        return [self.text(tag) for tag in tags]

    def record(self, record: dict[str, Any]) -> dict[str, Any]:
        """The interaction record with every stored string redacted (a new dict)."""
        if not self.active:
            return record
        out = dict(record)
        for column in JSON_COLUMNS:
            text = out.get(column)
            if isinstance(text, str):
                try:
                    out[column] = orjson.dumps(self.value(orjson.loads(text))).decode()
                except orjson.JSONDecodeError:
                    out[column] = self.text(text)
        for column in TEXT_COLUMNS:
            if isinstance(out.get(column), str):
                out[column] = self.text(out[column])
        for column in ID_COLUMNS:
            if isinstance(out.get(column), str):
                out[column] = self.identity(out[column])
        if isinstance(out.get("tags"), list):
            out["tags"] = self.tags(out["tags"])
        return out


def load_key(path: Path) -> bytes:
    """The pseudonym key beside the database: read, or created (0600) on first use."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # created meanwhile by another process: use that one
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex() + "\n")
    return key


def redactor_for(settings: Settings) -> Redactor:
    if not settings.redact:
        return Redactor([])
    if settings.redaction_key is not None:
        text = settings.redaction_key.get_secret_value().strip()
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise ConfigError("TUNELOOP_REDACTION_KEY must be 64 hex digits (32 bytes), e.g. "
                              "from `python -c 'import secrets; print(secrets.token_hex(32))'`")
        return Redactor(settings.redact, region=settings.redact_phone_region, key=key)
    if settings.db_is_postgres:
        raise ConfigError("with a Postgres store and redaction on, set TUNELOOP_REDACTION_KEY "
                          "(64 hex digits): every replica must give a user the same pseudonym")
    key_file = settings.local_file("redaction-key")
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Redactor(settings.redact, region=settings.redact_phone_region, key=load_key(key_file))
