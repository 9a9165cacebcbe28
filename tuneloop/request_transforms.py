"""A route target's request transforms, resolved and applied: one pure definition for the
proxy (what a target receives, proxy/transforms.py validates the route) and the evaluation
(what each model is asked, exporter/evaluate.py). Imports nothing of ours but the template
kernel and the domain errors.

Order: strip the template, replace the system prompt, append the legacy separator, add the
trained stop sequence (always: merged with the app's own stops, see `merged_stop`; an app
`stop` OpenAI refuses sends the whole request as sent, a mismatch `malformed`). A
request that does not hold the template gets neither of the first two (see
`Applied.mismatch`); a legacy request with `echo` (its answer starts with the prompt as the
target got it) gets none of the first three (a mismatch `echo`); the payload is never
modified.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tuneloop.errors import TemplateMismatch
from tuneloop.prompt_template import SYSTEM_ROLES, PromptTemplate, strip_messages, strip_prompts
from tuneloop.responses_strip import strip_responses
from tuneloop.template_match import check_system_message

_SHORT = {"replace_system_prompt": "system prompt", "legacy_separator": "separator"}


def describe(transforms: Sequence[Mapping[str, Any]] | None) -> str:
    """A target's transforms for people: `strip support-bot-v1, system prompt, stop`."""
    return ", ".join(f"strip {t.get('template')}" if t.get("type") == "strip_template"
                     else _SHORT.get(str(t.get("type")), str(t.get("type")))
                     for t in transforms or () if isinstance(t, Mapping))


@dataclass(frozen=True, slots=True)
class Applied:
    """The body a target gets: `payload` (None when the transforms changed nothing) and the
    template the request did not match (None when it did, or there is none)."""

    payload: dict[str, Any] | None
    mismatch: TemplateMismatch | None = None
    stops_dropped: tuple[str, ...] = ()
    """The app's stop sequences left out: the trained stop plus the app's went over 4."""


UNCHANGED = Applied(None)


@dataclass(frozen=True, slots=True)
class TargetTransforms:
    """A target's transforms, resolved (the template object, not its name)."""

    template: PromptTemplate | None = None
    system_prompt: str | None = None
    separator: str | None = None
    stop: str | list[str] | None = None

    @classmethod
    def build(cls, transforms: Sequence[Mapping[str, Any]] | None,
              templates: Mapping[str, PromptTemplate], route_separator: str | None = None,
              route_stop: str | list[str] | None = None) -> TargetTransforms | None:
        """From a target's `transforms` as JSON (checked where the route was set); None when
        there is nothing to do. `route_*`: a stored route's route-level fields (before
        per-target transforms), applied to every target as they always were. A template
        missing from `templates` raises KeyError."""
        values: dict[str, Any] = {"separator": route_separator, "stop": route_stop}
        for transform in transforms or ():
            kind = transform.get("type")
            if kind == "strip_template":
                values["template"] = templates[str(transform.get("template"))]
            elif kind == "replace_system_prompt":
                values["system_prompt"] = transform.get("system_prompt")
            elif kind == "legacy_separator":
                values["separator"] = transform.get("separator")
            elif kind == "stop":
                values["stop"] = transform.get("stop")
        made = cls(**values)
        return None if made == cls() else made

    def apply(self, endpoint: str, payload: dict[str, Any]) -> Applied:
        """The request for this target (a shallow copy; `payload` is never modified)."""
        changed: dict[str, Any] | None = None
        mismatch: TemplateMismatch | None = None
        echo = endpoint == "completions" and payload.get("echo") not in (None, False)
        if (self.stop is not None and endpoint in ("completions", "chat.completions")
                and stop_refused(payload.get("stop"))):
            # the upstream refuses it: both arms get the request as the app sent it, so an
            # app key can't make only one arm fail
            return Applied(None, TemplateMismatch(
                "stop is not a non-empty string nor a list of at most 4 of them, which the "
                "OpenAI API refuses: sent as the app sent it", "malformed"))
        if endpoint == "chat.completions" and (self.template or self.system_prompt):
            messages = payload.get("messages")
            try:
                if self.template is not None:
                    messages = strip_messages(self.template, messages,  # type: ignore[arg-type]
                                              system_prompt=self.system_prompt)
                else:
                    messages = _with_system_prompt(messages, self.system_prompt or "")
                changed = {**payload, "messages": messages}
            except TemplateMismatch as exc:
                mismatch = exc
        elif echo and (self.template is not None or self.separator):
            # the app reads its own prompt back at the start of the text: a transformed one
            # would show it what the target got, so it is sent as the app sent it
            mismatch = TemplateMismatch("echo returns the prompt: sent as the app sent it, "
                                        "without the template strip or separator", "echo")
        elif endpoint == "completions" and self.template is not None:
            try:
                prompt = strip_prompts(self.template, payload.get("prompt"),
                                       replacement=self.system_prompt)
                changed = {**payload, "prompt": prompt}
            except TemplateMismatch as exc:
                mismatch = exc
        elif endpoint == "responses" and (self.template or self.system_prompt):
            try:
                changed = strip_responses(self.template, payload, self.system_prompt)
            except TemplateMismatch as exc:
                mismatch = exc
        if self.separator and endpoint == "completions" and not echo:
            current = (changed or payload).get("prompt")
            suffixed = _with_suffix(current, self.separator)
            if suffixed is not current:
                changed = {**(changed or payload), "prompt": suffixed}
        dropped: tuple[str, ...] = ()
        if self.stop is not None and endpoint in ("completions", "chat.completions"):
            app_stop = payload.get("stop")
            stop, dropped = merged_stop(self.stop, app_stop)
            if stop is not app_stop:
                changed = {**(changed or payload), "stop": stop}
        if changed is None and mismatch is None:
            return UNCHANGED
        return Applied(changed, mismatch, dropped)


MAX_STOPS = 4  # OpenAI's limit on `stop`


def stop_refused(app: Any) -> bool:
    """Whether OpenAI refuses the app's `stop`: it takes null, a string, or a list of at most
    4 strings, and refuses an empty string among them."""
    if app is None:
        return False
    if isinstance(app, str):
        return not app
    return (not isinstance(app, list) or len(app) > MAX_STOPS
            or not all(isinstance(s, str) and s for s in app))


def merged_stop(trained: str | list[str], app: Any) -> tuple[Any, tuple[str, ...]]:
    """The stop a target with a `stop` transform gets, and the app's stops left out. The
    trained stop is always sent (a fine-tune runs on past its end marker without it, whatever
    the app set, `[]` included): the app's stops are added after it, deduplicated, up to
    OpenAI's 4 (the app's first ones kept). A stop OpenAI would refuse (`stop_refused`: more
    than 4, an empty string, not a string) is left as the app sent it (the `app` object
    itself): the upstream refuses it as it does the baseline's (`TargetTransforms.apply`
    sends the whole request as sent, a mismatch `malformed`)."""
    own = [trained] if isinstance(trained, str) else list(trained)
    if app is None:
        return trained, ()
    if stop_refused(app):
        return app, ()
    theirs = [app] if isinstance(app, str) else app
    extra = [s for i, s in enumerate(theirs) if s not in own and s not in theirs[:i]]
    room = max(MAX_STOPS - len(own), 0)
    merged = own + extra[:room]
    if merged == theirs:
        return app, ()
    return merged, tuple(extra[room:])


def _with_system_prompt(messages: Any, system_prompt: str) -> list[Any]:
    """`replace_system_prompt` without a template. A message list the OpenAI API refuses
    (not a non-empty list of objects with a string role) is a mismatch `malformed`: the
    target gets it as sent, so the upstream refuses it as it does the baseline's."""
    if (not isinstance(messages, list) or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)):
        raise TemplateMismatch("the messages are not a non-empty list of objects with a "
                               "string role, which the OpenAI API refuses", "malformed")
    first = messages[0]
    if first["role"] in SYSTEM_ROLES and not isinstance(first.get("content"), str | list):
        raise TemplateMismatch("the system message's content is neither a string nor a list, "
                               "which the OpenAI API refuses", "malformed")
    if first["role"] in SYSTEM_ROLES:
        check_system_message(first)
        replaced: dict[str, Any] = {"role": first["role"], "content": system_prompt}
        if "name" in first:
            replaced["name"] = first["name"]
        return [replaced, *messages[1:]]
    return [{"role": "system", "content": system_prompt}, *messages]


def _with_suffix(prompt: Any, suffix: str) -> Any:
    """The prompt ending with `suffix` (the same object when it already did)."""
    if isinstance(prompt, str):
        return prompt if prompt.endswith(suffix) else prompt + suffix
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if all(p.endswith(suffix) for p in prompt):
            return prompt
        return [p if p.endswith(suffix) else p + suffix for p in prompt]
    return prompt
