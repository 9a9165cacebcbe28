"""What every upstream client hands back: one small interface over a reply, and its errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


class UpstreamReply(Protocol):
    status: int
    headers: list[tuple[str, str]]

    @property
    def content_type(self) -> str: ...

    @property
    def content_encoding(self) -> str: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def read(self) -> bytes: ...

    def release(self) -> None: ...


class UpstreamCut(Exception):
    """The upstream closed the connection before its body was complete."""


@dataclass(frozen=True)
class Timeouts:
    connect_s: float
    read_s: float


def header_value(headers: list[tuple[str, str]], name: str) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value
    return ""


class HeaderAccess:
    """The two headers capture needs, for replies that keep their headers as pairs."""

    headers: list[tuple[str, str]]

    @property
    def content_type(self) -> str:
        return header_value(self.headers, "content-type")

    @property
    def content_encoding(self) -> str:
        return header_value(self.headers, "content-encoding").lower()
