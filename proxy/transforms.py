"""Per-target request transforms: what a route target changes in the requests sent to it.

A target may carry a list of transforms; they apply only to requests sent to that target (a
canary's baseline without transforms gets the request exactly as the app sent it). They never
change where a request goes, which key it carries or which headers: only the body.

- `strip_template` (`template`: `name-vN`): the frozen prompt template is taken out of the
  request (`tuneloop.prompt_template`), since the fine-tuned model learned it.
- `replace_system_prompt` (`system_prompt`): the request's system prompt is replaced by this
  one (inserted first when it has none). After `strip_template`, it takes the stripped
  system prompt's place; after a legacy template's, it is put in front of the stripped prompt
  (as `export --strip-template --system-prompt` does).
- `legacy_separator` (`separator`): legacy completions: appended to each prompt that does not
  already end with it.
- `stop` (`stop`): the stop sequence set on completions and chat requests that set none.

They apply in that order, whatever their order in the list; a type appears at most once.

When a request does not hold the target's template (the app changed its prompt), the target
still gets it, unstripped and with its own system prompt (no `strip_template` nor
`replace_system_prompt`: an instruction the app added must not be thrown away), with the
separator and stop sequence the model needs; the caller counts and logs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneloop.errors import BadRequest, TemplateMismatch
from tuneloop.prompt_template import PromptTemplate, strip_messages, strip_prompt

SYSTEM_ROLES = ("system", "developer")


class StripTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["strip_template"]
    template: str = Field(min_length=1, max_length=80)


class ReplaceSystemPrompt(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["replace_system_prompt"]
    system_prompt: str = Field(min_length=1, max_length=100_000)


class LegacySeparator(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["legacy_separator"]
    separator: str = Field(min_length=1, max_length=1000)


class StopSequence(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["stop"]
    stop: str | list[str] = Field(min_length=1)


Transform = Annotated[StripTemplate | ReplaceSystemPrompt | LegacySeparator | StopSequence,
                      Field(discriminator="type")]


def check_transforms(where: str, transforms: list[Any],
                     templates: Mapping[str, PromptTemplate]) -> None:
    """Refuse a list that cannot work (BadRequest naming the target): a type twice, an
    unknown template, or legacy transforms beside chat-only ones."""
    kinds = [t.type for t in transforms]
    for kind in set(kinds):
        if kinds.count(kind) > 1:
            raise BadRequest(f"{where}: transform {kind!r} appears more than once")
    chat_reason: str | None = None
    legacy_reason: str | None = None
    legacy_template = False  # replace_system_prompt then prefixes the stripped prompt
    for transform in transforms:
        if isinstance(transform, StripTemplate):
            template = templates.get(transform.template)
            if template is None:
                raise BadRequest(f"{where}: strip_template names an unknown template "
                                 f"{transform.template!r} (see `tuneloop templates`)",
                                 param="template")
            if template.has_chat_parts and not template.has_prompt_parts:
                chat_reason = f"template {template.ref} is a chat template"
            elif template.has_prompt_parts and not template.has_chat_parts:
                legacy_reason = f"template {template.ref} is a legacy-prompt template"
                legacy_template = True
    for transform in transforms:
        if isinstance(transform, ReplaceSystemPrompt) and not legacy_template:
            chat_reason = chat_reason or ("replace_system_prompt is for chat requests (or "
                                          "after a legacy template's strip_template)")
        elif isinstance(transform, LegacySeparator):
            legacy_reason = legacy_reason or "legacy_separator is for legacy completions"
    if chat_reason and legacy_reason:
        raise BadRequest(f"{where}: a target is either chat or legacy completions: "
                         f"{legacy_reason}, but {chat_reason}")


def template_refs(transforms: list[Any] | None) -> list[str]:
    return [t.template for t in transforms or () if isinstance(t, StripTemplate)]


@dataclass(frozen=True, slots=True)
class Applied:
    """The body a target gets: `payload` (None when the transforms changed nothing) and the
    template the request did not match (None when it did, or there is none)."""

    payload: dict[str, Any] | None
    mismatch: TemplateMismatch | None = None


UNCHANGED = Applied(None)


@dataclass(frozen=True, slots=True)
class TargetTransforms:
    """A target's transforms, resolved (the template object, not its name)."""

    template: PromptTemplate | None = None
    system_prompt: str | None = None
    separator: str | None = None
    stop: str | list[str] | None = None

    @classmethod
    def build(cls, transforms: list[Any] | None, templates: Mapping[str, PromptTemplate],
              route_separator: str | None = None,
              route_stop: str | list[str] | None = None) -> TargetTransforms | None:
        """None when there is nothing to do. `route_*`: a stored route's route-level fields
        (before per-target transforms), applied to every target as they always were."""
        values: dict[str, Any] = {"separator": route_separator, "stop": route_stop}
        for transform in transforms or ():
            if isinstance(transform, StripTemplate):
                values["template"] = templates[transform.template]
            elif isinstance(transform, ReplaceSystemPrompt):
                values["system_prompt"] = transform.system_prompt
            elif isinstance(transform, LegacySeparator):
                values["separator"] = transform.separator
            else:
                values["stop"] = transform.stop
        made = cls(**values)
        return None if made == cls() else made

    def apply(self, endpoint: str, payload: dict[str, Any]) -> Applied:
        """The request for this target (a shallow copy; `payload` is never modified)."""
        changed: dict[str, Any] | None = None
        mismatch: TemplateMismatch | None = None
        if endpoint == "chat.completions" and (self.template or self.system_prompt):
            messages = payload.get("messages")
            if isinstance(messages, list):
                try:
                    if self.template is not None:
                        messages = strip_messages(self.template, messages,
                                                  system_prompt=self.system_prompt)
                    else:
                        messages = _with_system_prompt(messages, self.system_prompt or "")
                    changed = {**payload, "messages": messages}
                except TemplateMismatch as exc:
                    mismatch = exc
        elif endpoint == "completions" and self.template is not None:
            try:
                prompt = strip_prompt(self.template, payload.get("prompt"),
                                      replacement=self.system_prompt)
                changed = {**payload, "prompt": prompt}
            except TemplateMismatch as exc:
                mismatch = exc
        if self.separator and endpoint == "completions":
            current = (changed or payload).get("prompt")
            suffixed = _with_suffix(current, self.separator)
            if suffixed is not current:
                changed = {**(changed or payload), "prompt": suffixed}
        if (self.stop is not None and payload.get("stop") is None
                and endpoint in ("completions", "chat.completions")):
            changed = {**(changed or payload), "stop": self.stop}
        if changed is None and mismatch is None:
            return UNCHANGED
        return Applied(changed, mismatch)


def _with_system_prompt(messages: list[Any], system_prompt: str) -> list[Any]:
    first = messages[0] if messages else None
    if isinstance(first, dict) and first.get("role") in SYSTEM_ROLES:
        return [{"role": first["role"], "content": system_prompt}, *messages[1:]]
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
