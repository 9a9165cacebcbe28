"""The parts of an incoming ASGI request the hot path needs, read once from the scope."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import Scope

from proxy.context import ProxyContext


@dataclass(slots=True)
class Incoming:
    method: str
    path: str
    """As sent, still percent-encoded (ASGI's raw_path), so it reaches the upstream unchanged."""
    query: str
    headers: dict[str, str]
    """Lower-case names; a repeated header keeps its last value."""
    ctx: ProxyContext

    @classmethod
    def from_scope(cls, scope: Scope) -> Incoming:
        return cls(
            method=scope["method"],
            path=(scope.get("raw_path") or scope["path"].encode()).decode("latin-1"),
            query=scope["query_string"].decode("latin-1"),
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            ctx=scope["app"].state.ctx,
        )

    @property
    def upstream_suffix(self) -> str:
        """The path after /v1, with the query string, to append to an upstream base URL."""
        suffix = self.path[len("/v1"):]
        return f"{suffix}?{self.query}" if self.query else suffix
