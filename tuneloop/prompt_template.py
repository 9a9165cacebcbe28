"""Frozen prompt templates: their shape, whether a request matches one, and stripping it.

A template is the part of a prompt an app sends unchanged with every request: the system
prompt, leading few-shot turns, a fixed prefix and suffix around the last user message, and for
legacy completions a fixed prefix and suffix of the prompt. A fine-tuned model learns it, so
training examples (the exporter) and requests to that model (the proxy) can leave it out.

Pure functions over plain JSON values; imports nothing of ours but the domain errors, so the
proxy, the exporter and the review app share one definition. Matching and stripping live in
tuneloop/template_match.py (re-exported here): they run per request on the proxy's path, in one
linear pass, and are total over whatever JSON a client sends (a malformed message list is a
mismatch with part `malformed`, never another error).

Rules:
- A message is an object with a string `role`; a list holding anything else is `malformed`.
- A content is a string or a list of parts. A list whose parts are all text matches a string
  equal to the parts' texts joined by nothing (how OpenAI reads them); any other list matches
  only an equal list.
- The system prompt is the first message when its role is `system` or `developer`. A template
  without one keeps the request's own system message and looks for the few-shot turns after it.
- Few-shot turns are compared on role and content (a `name` must be equal too when either has
  one); they all must be there, in order, right after the system prompt.
- The user prefix and suffix apply to every user message after the few-shot turns: to its
  string, or to the first and last parts of its content list (text parts). The LAST one must
  hold both, not overlapping; an earlier one is stripped when it holds both (apps that wrap
  every turn) and kept as sent when not (apps that wrap only the newest).
- Stripping returns what varies: the messages after the few-shot turns, the user messages
  without prefix and suffix (an emptied text part is dropped), and, when asked, a short
  replacement system prompt as the first message (where the template's was, with its role,
  else inserted). With a template without one, a request holding its own system message is a
  mismatch `own_system_prompt`: that text varies per request, a replacement would delete it.
- A request that is nothing but the template (no message after the few-shot turns, or a last
  user message or prompt that is empty once stripped) is a mismatch: there is nothing to train
  on or to send.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from tuneloop.errors import BadRequest
from tuneloop.template_match import SYSTEM_ROLES as SYSTEM_ROLES
from tuneloop.template_match import content_as_text as content_as_text
from tuneloop.template_match import matches_messages as matches_messages
from tuneloop.template_match import matches_prompt as matches_prompt
from tuneloop.template_match import mismatch_messages as mismatch_messages
from tuneloop.template_match import mismatch_prompt as mismatch_prompt
from tuneloop.template_match import strip_messages as strip_messages
from tuneloop.template_match import strip_prompt as strip_prompt
from tuneloop.template_match import strip_prompts as strip_prompts
from tuneloop.template_names import check_name as check_name
from tuneloop.template_names import parse_ref as parse_ref

Message = dict[str, Any]
MAX_TEMPLATE_CHARS = 1_000_000
_FEW_SHOT_KEYS = frozenset({"role", "content", "name"})


@dataclass(frozen=True, slots=True, eq=True)
class PromptTemplate:
    """One frozen version of a template. Empty strings / `None` / `()` mean "no such part"."""

    name: str
    version: int
    system_prompt: str | None = None
    few_shot: tuple[Message, ...] = field(default=())
    user_prefix: str = ""
    user_suffix: str = ""
    prompt_prefix: str = ""
    prompt_suffix: str = ""

    def __post_init__(self) -> None:
        check_name(self.name)
        if isinstance(self.version, bool) or not isinstance(self.version, int):
            raise BadRequest("a template version is a whole number", param="version")
        if self.version < 1:
            raise BadRequest("a template version starts at 1", param="version")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise BadRequest("system_prompt must be a string or null", param="system_prompt")
        if self.system_prompt == "":
            raise BadRequest(
                "system_prompt must not be empty (null means no system prompt)",
                param="system_prompt",
            )
        for key in ("user_prefix", "user_suffix", "prompt_prefix", "prompt_suffix"):
            if not isinstance(getattr(self, key), str):
                raise BadRequest(f"{key} must be a string", param=key)
        turns = tuple(_check_turn(i, turn) for i, turn in enumerate(self.few_shot))
        object.__setattr__(self, "few_shot", turns)
        if self.is_empty:
            raise BadRequest("a template must hold at least one part", param="parts")
        size = sum(len(s) for s in self._texts())
        if size > MAX_TEMPLATE_CHARS:
            raise BadRequest(f"a template holds at most {MAX_TEMPLATE_CHARS} characters")

    def __hash__(self) -> int:  # the few-shot dicts aren't hashable; equal ones share a ref
        return hash((self.name, self.version))

    @property
    def ref(self) -> str:
        """`support-bot-v1`: how users name one version."""
        return f"{self.name}-v{self.version}"

    @property
    def is_empty(self) -> bool:
        return not (
            self.system_prompt
            or self.few_shot
            or self.user_prefix
            or self.user_suffix
            or self.prompt_prefix
            or self.prompt_suffix
        )

    @property
    def has_chat_parts(self) -> bool:
        return bool(self.system_prompt or self.few_shot or self.user_prefix or self.user_suffix)

    @property
    def has_prompt_parts(self) -> bool:
        return bool(self.prompt_prefix or self.prompt_suffix)

    def _texts(self) -> list[str]:
        texts = [self.system_prompt or "", self.user_prefix, self.user_suffix]
        texts += [self.prompt_prefix, self.prompt_suffix]
        texts += [content_as_text(t.get("content")) or "" for t in self.few_shot]
        return texts

    def parts(self) -> dict[str, Any]:
        """The template's parts (no name or version), as stored and shown."""
        return {
            "system_prompt": self.system_prompt,
            "few_shot": [dict(t) for t in self.few_shot],
            "user_prefix": self.user_prefix,
            "user_suffix": self.user_suffix,
            "prompt_prefix": self.prompt_prefix,
            "prompt_suffix": self.prompt_suffix,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, **self.parts()}

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict()).decode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptTemplate:
        if not isinstance(data, Mapping):
            raise BadRequest("a template is a JSON object")
        unknown = set(data) - {"name", "version", *_PART_KEYS}
        if unknown:
            raise BadRequest(f"unknown template fields: {', '.join(sorted(unknown))}")
        few_shot = data.get("few_shot") or ()
        if not isinstance(few_shot, (list, tuple)):
            raise BadRequest("few_shot must be a list of messages", param="few_shot")
        return cls(
            name=data.get("name"),  # type: ignore[arg-type]  # checked in __post_init__
            version=data.get("version"),  # type: ignore[arg-type]
            system_prompt=data.get("system_prompt"),
            few_shot=tuple(few_shot),
            user_prefix=data.get("user_prefix") or "",
            user_suffix=data.get("user_suffix") or "",
            prompt_prefix=data.get("prompt_prefix") or "",
            prompt_suffix=data.get("prompt_suffix") or "",
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> PromptTemplate:
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"a template is not valid JSON: {exc}") from None
        return cls.from_dict(data)


_PART_KEYS = (
    "system_prompt",
    "few_shot",
    "user_prefix",
    "user_suffix",
    "prompt_prefix",
    "prompt_suffix",
)


def _check_turn(index: int, turn: object) -> Message:
    if not isinstance(turn, Mapping):
        raise BadRequest(f"few_shot[{index}] is not a message object", param="few_shot")
    unknown = set(turn) - _FEW_SHOT_KEYS
    if unknown:
        raise BadRequest(
            f"few_shot[{index}] has fields a template can't hold: {', '.join(sorted(unknown))}",
            param="few_shot",
        )
    role = turn.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise BadRequest(f"few_shot[{index}] has role {role!r}", param="few_shot")
    content = turn.get("content")
    if not isinstance(content, (str, list)):
        raise BadRequest(f"few_shot[{index}] has no content", param="few_shot")
    return dict(turn)
