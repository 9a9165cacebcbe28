"""Fake OpenAI and Anthropic upstreams for tests and benchmarks.

Exports load lazily, so ``python -m tests.fakes.openai_upstream`` runs without runpy warnings.
"""

from __future__ import annotations

from importlib import import_module
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .anthropic_upstream import FakeAnthropicState
    from .anthropic_upstream import create_app as create_anthropic_app
    from .common import ConnectionCutError, FakeStateBase, ProgrammedFailure, RecordedRequest
    from .openai_upstream import FakeOpenAIState
    from .openai_upstream import create_app as create_openai_app
    from .server import free_port, serve_app

_EXPORTS = MappingProxyType(
    {
        "ConnectionCutError": ("common", "ConnectionCutError"),
        "FakeAnthropicState": ("anthropic_upstream", "FakeAnthropicState"),
        "FakeOpenAIState": ("openai_upstream", "FakeOpenAIState"),
        "FakeStateBase": ("common", "FakeStateBase"),
        "ProgrammedFailure": ("common", "ProgrammedFailure"),
        "RecordedRequest": ("common", "RecordedRequest"),
        "create_anthropic_app": ("anthropic_upstream", "create_app"),
        "create_openai_app": ("openai_upstream", "create_app"),
        "free_port": ("server", "free_port"),
        "serve_app": ("server", "serve_app"),
    }
)
__all__ = [
    "ConnectionCutError",
    "FakeAnthropicState",
    "FakeOpenAIState",
    "FakeStateBase",
    "ProgrammedFailure",
    "RecordedRequest",
    "create_anthropic_app",
    "create_openai_app",
    "free_port",
    "serve_app",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    return getattr(import_module(f".{module}", __name__), attr)
