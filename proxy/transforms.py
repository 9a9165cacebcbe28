"""Per-target request transforms: what a route target changes in the requests sent to it.

A target may carry a list of transforms; they apply only to requests sent to that target (a
canary's baseline without transforms gets the request exactly as the app sent it). They never
change where a request goes, which key it carries or which headers: only the body.

- `strip_template` (`template`: `name-vN`): the frozen prompt template is taken out of the
  request (`tuneloop.prompt_template`; a `/v1/responses` request in its own shape,
  `tuneloop.responses_strip`), since the fine-tuned model learned it.
- `replace_system_prompt` (`system_prompt`): the request's system prompt is replaced by this
  one (inserted first when it has none; `/v1/responses`: in `instructions`). After
  `strip_template`, it takes the stripped system prompt's place (a template without one: a
  request holding its own system message, or `instructions`, is a mismatch
  `own_system_prompt`, never replaced); after a legacy template's, it is put in front of the
  stripped prompt (as `export --strip-template --system-prompt` does).
- `legacy_separator` (`separator`): legacy completions: appended to each prompt that does not
  already end with it.
- `stop` (`stop`): the stop sequence always sent on completions and chat requests, merged with
  a request's own (`tuneloop.request_transforms.merged_stop`): a string or a list of at most
  4, none empty (OpenAI's rule; anything else is refused, 400).

They apply in that order, whatever their order in the list; a type appears at most once.

When a request does not hold the target's template (the app changed its prompt), the target
still gets it, unstripped and with its own system prompt (no `strip_template` nor
`replace_system_prompt`: an instruction the app added must not be thrown away), with the
separator and stop sequence the model needs; the caller counts and logs it. A legacy
request with `echo` (its answer starts with the prompt) is sent unstripped and without the
separator (a mismatch `echo`), so the app reads back the prompt it sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneloop.errors import BadRequest
from tuneloop.prompt_template import PromptTemplate
from tuneloop.request_transforms import UNCHANGED, Applied, TargetTransforms

__all__ = ["UNCHANGED", "Applied", "TargetTransforms", "Transform", "check_stop",
           "check_transforms", "template_refs"]


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


MAX_STOP_SEQUENCES = 4  # OpenAI's rule for `stop`: a string or up to 4 strings, none empty


def check_stop(where: str, stop: str | list[str] | None) -> None:
    """Refuse a stop value the OpenAI API refuses (BadRequest naming where it is): every
    request the target gets would fail."""
    if stop is None:
        return
    values = [stop] if isinstance(stop, str) else stop
    if not values or len(values) > MAX_STOP_SEQUENCES:
        raise BadRequest(f"{where}: stop is a string or a list of 1 to {MAX_STOP_SEQUENCES} "
                         f"strings (OpenAI's limit), not {len(values)}", param="stop")
    if any(not value for value in values):
        raise BadRequest(f"{where}: a stop sequence must not be empty", param="stop")


def check_transforms(where: str, transforms: list[Any],
                     templates: Mapping[str, PromptTemplate]) -> None:
    """Refuse a list that cannot work (BadRequest naming the target): a type twice, an
    unknown template, legacy transforms beside chat-only ones, or a stop value OpenAI
    refuses."""
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
        if isinstance(transform, StopSequence):
            check_stop(where, transform.stop)
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
