"""Frozen prompt templates: their shape, whether a request matches one, and stripping it.

A template is the part of a prompt an app sends unchanged with every request: the system
prompt, leading few-shot turns, a fixed prefix and suffix around the last user message, and for
legacy completions a fixed prefix and suffix of the prompt. A fine-tuned model learns it, so
training examples (the exporter) and requests to that model (the proxy) can leave it out.

Pure functions over plain JSON values; imports nothing of ours but the domain errors, so the
proxy, the exporter and the review app share one definition. `strip_*` runs per request on the
proxy's path: strings are compared by length then equality (`startswith`, `endswith`, `==`), no
regular expression and no JSON serialization; the messages are copied shallowly.

Rules:
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
  replacement system prompt as the first message (where the template's was, with its role;
  with a template without one, in place of the app's own system message, else inserted).
- A request that is nothing but the template (no message after the few-shot turns, or a last
  user message or prompt that is empty once stripped) is a mismatch: there is nothing to train
  on or to send.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from tuneloop.errors import BadRequest, TemplateMismatch
from tuneloop.template_names import check_name as check_name
from tuneloop.template_names import parse_ref as parse_ref

Message = dict[str, Any]
SYSTEM_ROLES = ("system", "developer")
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


# --- matching -------------------------------------------------------------------------------


def content_as_text(content: object) -> str | None:
    """The string a content stands for: itself, or the joined texts of an all-text list;
    None for anything else (an image part, a bad shape)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") not in ("text", "input_text"):
                return None
            text = part.get("text")
            if not isinstance(text, str):
                return None
            texts.append(text)
        return "".join(texts)
    return None


def _same_content(expected: object, actual: object) -> bool:
    if type(expected) is str and type(actual) is str:
        return len(expected) == len(actual) and expected == actual
    if expected == actual:
        return True
    wanted, got = content_as_text(expected), content_as_text(actual)
    return wanted is not None and got is not None and wanted == got


def _same_turn(expected: Mapping[str, Any], actual: object) -> bool:
    if not isinstance(actual, Mapping):
        return False
    if actual.get("role") != expected.get("role"):
        return False
    if actual.get("name") != expected.get("name"):
        return False
    if actual.get("tool_calls") or actual.get("function_call"):
        return False
    return _same_content(expected.get("content"), actual.get("content"))


def _is_system(message: object) -> bool:
    return isinstance(message, Mapping) and message.get("role") in SYSTEM_ROLES


def _last_user_index(messages: Sequence[object], start: int) -> int:
    for index in range(len(messages) - 1, start - 1, -1):
        message = messages[index]
        if isinstance(message, Mapping) and message.get("role") == "user":
            return index
    return -1


def _strip_text(text: str, prefix: str, suffix: str, what: str) -> str:
    if prefix and not text.startswith(prefix):
        raise TemplateMismatch(f"{what} does not start with the template's prefix", "prefix")
    if suffix and not text.endswith(suffix):
        raise TemplateMismatch(f"{what} does not end with the template's suffix", "suffix")
    if len(text) < len(prefix) + len(suffix):
        raise TemplateMismatch(f"{what}'s prefix and suffix overlap", "prefix_suffix_overlap")
    return text[len(prefix) : len(text) - len(suffix)]


def _is_text_part(part: object) -> bool:
    return isinstance(part, Mapping) and part.get("type") in ("text", "input_text")


def _strip_part(part: object, prefix: str, suffix: str, where: str) -> dict[str, Any]:
    what = "the last user message"
    if not _is_text_part(part):
        raise TemplateMismatch(f"{what} does not {where} with a text part", "user_content")
    assert isinstance(part, Mapping)
    text = part.get("text")
    if not isinstance(text, str):
        raise TemplateMismatch(f"{what}'s text part has no text", "user_content")
    return {**part, "text": _strip_text(text, prefix, suffix, what)}


def _strip_content(content: object, prefix: str, suffix: str) -> object:
    if isinstance(content, str):
        return _strip_text(content, prefix, suffix, "the last user message")
    if not isinstance(content, list) or not content:
        raise TemplateMismatch("the last user message has no text to strip", "user_content")
    parts: list[object] = list(content)
    if len(parts) == 1:
        parts[0] = _strip_part(parts[0], prefix, suffix, "start and end")
    else:
        if prefix:
            parts[0] = _strip_part(parts[0], prefix, "", "start")
        if suffix:
            parts[-1] = _strip_part(parts[-1], "", suffix, "end")
    kept = [p for p in parts if not (isinstance(p, Mapping) and _is_text_part(p) and not p["text"])]
    return kept if kept else ""


def strip_messages(
    template: PromptTemplate,
    messages: Sequence[Mapping[str, Any]],
    *,
    system_prompt: str | None = None,
) -> list[Message]:
    """What varies in a chat request: the messages without the template's parts, and with
    `system_prompt` (a short replacement) first when given. Raises :class:`TemplateMismatch`
    naming the first part that differs; the input is never modified."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        raise TemplateMismatch("the request has no message list", "messages")
    if not template.has_chat_parts:
        raise TemplateMismatch(
            f"template {template.ref} has no chat parts (it is for legacy prompts)", "kind"
        )
    start = 0
    system_role = "system"
    if template.system_prompt is not None:
        if not messages or not _is_system(messages[0]):
            raise TemplateMismatch("the request has no system prompt", "system_prompt")
        system_role = messages[0]["role"]
        if not _same_content(template.system_prompt, messages[0].get("content")):
            raise TemplateMismatch(
                "the request's system prompt differs from the template's", "system_prompt"
            )
        start = 1
    elif messages and _is_system(messages[0]):
        start = 1  # the app's own system message stays; few-shot turns follow it
    kept_head = list(messages[:start]) if template.system_prompt is None else []
    for offset, turn in enumerate(template.few_shot):
        index = start + offset
        if index >= len(messages):
            raise TemplateMismatch(
                f"few-shot turn {offset + 1} of {len(template.few_shot)} is missing", "few_shot"
            )
        if not _same_turn(turn, messages[index]):
            raise TemplateMismatch(
                f"few-shot turn {offset + 1} of {len(template.few_shot)} differs", "few_shot"
            )
    start += len(template.few_shot)
    rest: list[Message] = [m if isinstance(m, dict) else dict(m) for m in messages[start:]]
    if not rest:
        raise TemplateMismatch("the request is nothing but the template", "empty")
    if template.user_prefix or template.user_suffix:
        last = _last_user_index(rest, 0)
        if last < 0:
            raise TemplateMismatch("no user message follows the few-shot turns", "user_message")
        for index in range(last, -1, -1):
            message = rest[index]
            if message.get("role") != "user":
                continue
            try:
                content = _strip_content(
                    message.get("content"), template.user_prefix, template.user_suffix)
            except TemplateMismatch:
                if index == last:
                    raise
                continue  # an earlier turn the app sent without the affixes: kept as sent
            text = content_as_text(content)
            if content == "" or (text is not None and not text.strip()):
                if index == last:
                    raise TemplateMismatch(
                        "the last user message is nothing but the template's prefix and "
                        "suffix", "empty")
                continue
            rest[index] = {**message, "content": content}
    head: list[Message] = [dict(m) for m in kept_head]
    if system_prompt is not None:
        # exactly one system message: the replacement takes the place of the template's, or
        # of the app's own when the template has none
        head = [{"role": system_role if not head else head[0]["role"], "content": system_prompt}]
    return head + rest


def strip_prompt(
    template: PromptTemplate, prompt: object, *, replacement: str | None = None
) -> str:
    """What varies in a legacy prompt: the prompt without the template's prefix and suffix,
    with `replacement` (a short instruction) in front when given."""
    if not isinstance(prompt, str):
        raise TemplateMismatch("the prompt is not a single string", "prompt")
    if not template.has_prompt_parts:
        raise TemplateMismatch(
            f"template {template.ref} has no prompt prefix or suffix (it is for chat)", "kind"
        )
    stripped = _strip_text(prompt, template.prompt_prefix, template.prompt_suffix, "the prompt")
    if not stripped.strip():
        raise TemplateMismatch("the prompt is nothing but the template", "empty")
    return stripped if replacement is None else replacement + stripped


def mismatch_messages(
    template: PromptTemplate, messages: Sequence[Mapping[str, Any]]
) -> TemplateMismatch | None:
    """None when the messages match the template, else the error saying where they differ."""
    try:
        strip_messages(template, messages)
    except TemplateMismatch as exc:
        return exc
    return None


def mismatch_prompt(template: PromptTemplate, prompt: object) -> TemplateMismatch | None:
    try:
        strip_prompt(template, prompt)
    except TemplateMismatch as exc:
        return exc
    return None


def matches_messages(template: PromptTemplate, messages: Sequence[Mapping[str, Any]]) -> bool:
    return mismatch_messages(template, messages) is None


def matches_prompt(template: PromptTemplate, prompt: object) -> bool:
    return mismatch_prompt(template, prompt) is None
