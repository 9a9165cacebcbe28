"""Optional redaction of personal data before anything is spooled or stored.

Applied to the string values of the request and the (assembled) response, never to the raw
JSON text, so the stored JSON stays valid. Card numbers must pass the Luhn check, which keeps
order numbers and timestamps out of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# +33 6 12 34 56 78, (415) 555-0132, 415-555-0132, +1.415.555.0132: 8-15 digits, written with
# a leading + or at least two separators (so bare ids, years and timestamps are left alone)
PHONE = re.compile(r"(?<![\w.+])(?:\+|\()?\d[\d\s().-]{6,22}\d(?![\w])")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[CARD]" if 13 <= len(digits) <= 19 and _luhn(digits) else match.group(0)


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = re.sub(r"\D", "", text)
    separators = len(re.findall(r"[\s().-]+", text))
    plausible = text.startswith("+") or separators >= 2
    if (8 <= len(digits) <= 15 and plausible and not ISO_DATE.search(text)
            and not IPV4.match(text)):
        return "[PHONE]"
    return text


_RULES: dict[str, tuple[re.Pattern[str], Callable[[re.Match[str]], str] | str]] = {
    "email": (EMAIL, "[EMAIL]"),
    "card": (CARD, _card),  # before phone: a card number also looks like digit groups
    "phone": (PHONE, _phone),
}


class Redactor:
    def __init__(self, kinds: Iterable[str]):
        wanted = set(kinds)
        unknown = wanted - _RULES.keys()
        if unknown:
            raise ValueError(f"unknown redaction kinds: {sorted(unknown)}")
        self._rules = [rule for name, rule in _RULES.items() if name in wanted]

    @property
    def active(self) -> bool:
        return bool(self._rules)

    def text(self, value: str) -> str:
        for pattern, replacement in self._rules:
            value = pattern.sub(replacement, value)
        return value

    def value(self, value: Any) -> Any:
        """A copy of a JSON value with every string redacted (keys are left alone)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        return value
