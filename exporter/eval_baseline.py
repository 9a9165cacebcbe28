"""The baseline's request in an evaluation of a model trained on a stripped export: what the
app really sent, taken from the interaction the example was exported from.

An export made with `--strip-template` lost the template; putting it back
(`eval_cases.messages_as_sent`) is a guess for what the template does not say: which user
turns the app wrapped in its prefix and suffix, the exact system message. So when an
example's lineage names its interaction and that interaction's logged `request`, stripped
the way the export stripped it, gives exactly the example's prompt, the baseline is asked
that logged request's messages (or legacy prompt): byte for byte what production sent the
current model. Otherwise (no lineage, the interaction forgotten, a reviewer edited the
prompt, a multi-turn chunk) the prompt is rebuilt, and the report counts how many were.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from exporter.eval_cases import EvalCase, Stripped
from exporter.examples import Example
from exporter.strip import TemplateStrip, strip_example
from tuneloop.errors import NotFound, TemplateMismatch

Fetch = Callable[[str], Mapping[str, Any]]


@dataclass(frozen=True)
class BaselineRequests:
    """How the baseline's requests were made: from the logged request, or rebuilt."""

    logged: int = 0
    rebuilt: int = 0

    def to_json(self) -> dict[str, int]:
        return {"logged": self.logged, "rebuilt": self.rebuilt}


def _request(item: Mapping[str, Any]) -> dict[str, Any] | None:
    request = item.get("request")
    if isinstance(request, str | bytes):
        try:
            request = orjson.loads(request)
        except orjson.JSONDecodeError:
            return None
    return request if isinstance(request, dict) else None


def _as_logged(case: EvalCase, request: Mapping[str, Any], strip: Stripped
               ) -> EvalCase | None:
    """The case with the logged request as what the app sent, when stripping it as the
    export did gives the case's prompt; else None."""
    legacy = case.prompt_as_sent is not None
    if legacy:
        prompt = request.get("prompt")
        if not isinstance(prompt, str):
            return None
        sent: list[Any] = [{"role": "user", "content": prompt}]
    else:
        messages = request.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return None
        sent = messages
    try:
        stripped = strip_example(Example("logged", sent), TemplateStrip(strip.template,
                                                                        strip.replacement))
    except (TemplateMismatch, TypeError, ValueError, AttributeError):
        return None
    if list(stripped.messages) != case.messages:
        return None
    if legacy:
        return replace(case, prompt_as_sent=sent[0]["content"])
    return replace(case, as_sent=[dict(m) for m in sent])


def with_logged_requests(cases: list[EvalCase], strip: Stripped | None, fetch: Fetch
                         ) -> tuple[list[EvalCase], BaselineRequests | None]:
    """The cases, each with the app's logged request where it can be trusted to be the
    example's (see the module doc); None counts when the export was not stripped (then the
    example's prompt is what the app sent)."""
    if strip is None:
        return cases, None
    out: list[EvalCase] = []
    logged = 0
    for case in cases:
        found = None
        if case.source_id is not None:
            try:
                request = _request(fetch(case.source_id))
            except NotFound:
                request = None
            found = _as_logged(case, request, strip) if request is not None else None
        logged += found is not None
        out.append(found or case)
    return out, BaselineRequests(logged, len(cases) - logged)
