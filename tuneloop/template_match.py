"""Whether a request holds a frozen prompt template, and the request without it (the rules are
in tuneloop/prompt_template.py's docstring; `prompt_template` re-exports these functions).

Runs per request on the proxy's path, so two promises:

- Total over JSON: whatever a client sends (a message that is not an object, a part without
  text, a number where a string belongs), these functions return or raise
  :class:`TemplateMismatch`, never anything else. A message list the OpenAI API would refuse
  (a message that is not an object with a string `role`, a text part we must read whose `text`
  is not a string) is a mismatch with part `malformed`: the target gets it as the app sent it,
  like the baseline does, and the upstream answers both alike.
- Linear and cheap: the roles are read once at C speed (`map(itemgetter("role"))`, which
  also tells a message that is not an object); a user message is stripped by looking at its
  first and last text parts only, a string content inline in the loop; a content list compared
  with a template text is read with `map` and `join` (no Python loop over its parts); a message
  is copied only when it changes. No regular expression, no JSON, no exception per turn.
  `bench/transforms.py` prints the cost per request shape next to the kernel before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from tuneloop.errors import TemplateMismatch

if TYPE_CHECKING:
    from tuneloop.prompt_template import PromptTemplate

Message = dict[str, Any]
SYSTEM_ROLES = ("system", "developer")
TEXT_TYPES = ("text", "input_text", "output_text")  # chat; Responses input; Responses output
_LAST = "the last user message"


_TYPE, _TEXT, _ROLE = itemgetter("type"), itemgetter("text"), itemgetter("role")
_TEXT_TYPE_SET = frozenset(TEXT_TYPES)


def content_as_text(content: object) -> str | None:
    """The string a content stands for: itself, or the joined texts of an all-text list;
    None for anything else (an image part, a bad shape). The list is read at C speed (`map`
    and `join`): a part that is not an object, a type that is not text or a text that is not
    a string makes it None."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    try:
        if not _TEXT_TYPE_SET.issuperset(map(_TYPE, content)):
            return None
        return "".join(map(_TEXT, content))
    except (KeyError, TypeError, IndexError):  # a part that is not an object, or no text
        return None


def same_text(expected: str, content: object) -> bool:
    """Whether `content` (a string or a list of text parts) stands for `expected`."""
    if isinstance(content, str):
        return content == expected
    text = content_as_text(content)
    return text is not None and text == expected


def _same_content(expected: object, actual: object) -> bool:
    if isinstance(expected, str):
        return same_text(expected, actual)
    if expected == actual:
        return True
    wanted = content_as_text(expected)
    return wanted is not None and same_text(wanted, actual)


def _same_turn(expected: Mapping[str, Any], actual: Message) -> bool:
    if actual.get("role") != expected.get("role") or actual.get("name") != expected.get("name"):
        return False
    if actual.get("tool_calls") or actual.get("function_call"):
        return False
    return _same_content(expected.get("content"), actual.get("content"))


def _malformed(what: str) -> TemplateMismatch:
    return TemplateMismatch(f"{what}, which the OpenAI API refuses", "malformed")


def _roles(messages: Sequence[Any]) -> list[str]:
    """Each message's role, read at C speed; a message that is not an object with a string
    role is `malformed`."""
    try:
        roles = list(map(_ROLE, messages))
    except (KeyError, TypeError, IndexError):
        index = next((i for i, m in enumerate(messages)
                      if not isinstance(m, dict) or "role" not in m), 0)
        raise _malformed(f"message {index} is not an object with a role") from None
    try:  # only objects have a "role" key among JSON values; join() refuses what is no str
        "".join(roles)
    except TypeError:
        raise _malformed("a message's role is not a string") from None
    return roles


CHAT_SYSTEM_KEYS = frozenset(("role", "content", "name"))
"""What the OpenAI chat API defines for a system (developer) message; `name` a string."""
RESPONSES_SYSTEM_KEYS = frozenset(("role", "content", "type"))
"""What the Responses API defines for an input message item; `type` is "message"."""


def check_system_message(message: Mapping[str, Any],
                         keys: frozenset[str] = CHAT_SYSTEM_KEYS) -> None:
    """A system message the transforms replace or take out must be one the OpenAI API
    accepts: another key, or a `name` that is not a string, is `malformed` (the target gets
    the request as sent, so the upstream refuses it as it does the baseline's)."""
    extra = message.keys() - keys
    if extra:
        raise _malformed(f"the system message has {', '.join(sorted(map(str, extra)))}, "
                         "which the API does not define for it")
    if "name" in message and not isinstance(message["name"], str):
        raise _malformed("the system message's name is not a string")
    if "type" in message and message["type"] != "message":
        raise _malformed("the system message's type is not \"message\"")


def _blank(text: str) -> bool:
    return not text or text.isspace()


def _strip_part(part: object, prefix: str, suffix: str) -> Message | str:
    """A text part without the prefix/suffix, or why not (a TemplateMismatch part name)."""
    if not isinstance(part, dict) or part.get("type") not in TEXT_TYPES:
        return "user_content"
    text = part.get("text")
    if not isinstance(text, str):
        return "malformed"
    stripped = _strip_str(text, prefix, suffix)
    return stripped if isinstance(stripped, _Miss) else {**part, "text": stripped}


class _Miss(str):
    """Why a text does not hold the affixes (a str subclass, so it is told from a result)."""


_PREFIX, _SUFFIX, _OVERLAP = _Miss("prefix"), _Miss("suffix"), _Miss("prefix_suffix_overlap")


def _strip_str(text: str, prefix: str, suffix: str) -> str | _Miss:
    if prefix and not text.startswith(prefix):
        return _PREFIX
    if suffix and not text.endswith(suffix):
        return _SUFFIX
    if len(text) < len(prefix) + len(suffix):
        return _OVERLAP
    return text[len(prefix): len(text) - len(suffix)] if prefix or suffix else text


def _strip_content(content: object, prefix: str, suffix: str) -> object:
    """The content without prefix and suffix (None when it is nothing else), or a `_Miss` /
    part name string saying why it can't be stripped."""
    if isinstance(content, str):
        stripped = _strip_str(content, prefix, suffix)
        if isinstance(stripped, _Miss):
            return stripped
        return None if _blank(stripped) else stripped
    if not isinstance(content, list) or not content:
        return _Miss("user_content")
    parts: list[Any] = list(content)
    if len(parts) == 1:
        first = _strip_part(parts[0], prefix, suffix)
        if isinstance(first, str):
            return _Miss(first)
        parts[0] = first
    else:
        if prefix:
            first = _strip_part(parts[0], prefix, "")
            if isinstance(first, str):
                return _Miss(first)
            parts[0] = first
        if suffix:
            last = _strip_part(parts[-1], "", suffix)
            if isinstance(last, str):
                return _Miss(last)
            parts[-1] = last
    if suffix and not parts[-1]["text"]:
        parts.pop()  # a text part emptied by the stripping is dropped (OpenAI refuses those)
    if prefix and parts and not parts[0]["text"]:
        parts.pop(0)
    blank = True
    for part in parts:  # any part we can't read is malformed; anything left but white space?
        if not isinstance(part, dict):
            return _Miss("malformed")
        if part.get("type") not in TEXT_TYPES:
            blank = False
            continue
        text = part.get("text")
        if not isinstance(text, str):
            return _Miss("malformed")
        blank = blank and _blank(text)
    return None if blank else parts


def _mismatch_of(miss: str) -> TemplateMismatch:
    reason = str(miss)  # a plain str: the part is a JSON key in reports
    if reason == "malformed":
        return _malformed(f"{_LAST} has a content part that is not an object, or a text part "
                          "without text")
    if reason == "user_content":
        return TemplateMismatch(f"{_LAST} has no text to strip", "user_content")
    if reason == "prefix_suffix_overlap":
        return TemplateMismatch(f"{_LAST}'s prefix and suffix overlap", reason)
    where = "start" if reason == "prefix" else "end"
    return TemplateMismatch(f"{_LAST} does not {where} with the template's {reason}", reason)


def strip_messages(
    template: PromptTemplate,
    messages: Sequence[Mapping[str, Any]],
    *,
    system_prompt: str | None = None,
    system_keys: frozenset[str] = CHAT_SYSTEM_KEYS,
) -> list[Message]:
    """What varies in a chat request: the messages without the template's parts, and with
    `system_prompt` (a short replacement) first when given. Raises :class:`TemplateMismatch`
    naming the first part that differs; the input is never modified. Each message is looked
    at once (its shape checked where it is read); a system message replaced or taken out
    must have only `system_keys` (`check_system_message`)."""
    if not isinstance(messages, list | tuple):
        raise TemplateMismatch("the request has no message list", "messages")
    if not template.has_chat_parts:
        raise TemplateMismatch(
            f"template {template.ref} has no chat parts (it is for legacy prompts)", "kind")
    turns = template.few_shot
    start = len(turns)
    _roles(messages[: start + 1])
    first: Any = messages[0] if messages else None
    head_role = first["role"] if first is not None and first["role"] in SYSTEM_ROLES else None
    if system_prompt is not None and head_role is not None and template.system_prompt is None:
        # the app's own system message is not template: it varies per request (a tenant's
        # instructions, a customer's context); a replacement would delete it silently
        raise TemplateMismatch(
            f"the request has its own system message and template {template.ref} has no "
            "system prompt: the replacement system prompt would delete it", "own_system_prompt")
    if template.system_prompt is not None:
        if head_role is None:
            raise TemplateMismatch("the request has no system prompt", "system_prompt")
        if not same_text(template.system_prompt, first.get("content")):
            raise TemplateMismatch(
                "the request's system prompt differs from the template's", "system_prompt")
        check_system_message(first, system_keys)
    if head_role is not None:  # the template's system prompt, or the app's own (kept)
        start += 1
        _roles(messages[start: start + 1])
    skip = start - len(turns)
    for offset, turn in enumerate(turns):
        if skip + offset >= len(messages):
            raise TemplateMismatch(f"few-shot turn {offset + 1} of {len(turns)} is missing",
                                   "few_shot")
        if not _same_turn(turn, messages[skip + offset]):
            raise TemplateMismatch(f"few-shot turn {offset + 1} of {len(turns)} differs",
                                   "few_shot")
    rest: list[Message] = list(messages[start:])
    if not rest:
        raise TemplateMismatch("the request is nothing but the template", "empty")
    if template.user_prefix or template.user_suffix:
        _strip_user_turns(rest, template.user_prefix, template.user_suffix)
    else:
        _roles(rest)
    if system_prompt is not None:
        # exactly one system message: the replacement takes the place of the template's (or
        # comes first when neither the template nor the request has one)
        replacement: Message = {"role": head_role or "system", "content": system_prompt}
        if head_role is not None and isinstance(first.get("name"), str):
            replacement["name"] = first["name"]  # what is valid of the app's message is kept
        return [replacement, *rest]
    if head_role is not None and template.system_prompt is None:
        return [first, *rest]
    return rest


def _strip_user_turns(rest: list[Message], prefix: str, suffix: str) -> None:
    """Strip every user turn in place (in `rest`, a copy), checking each message's shape on
    the way: the last must hold the affixes and more; an earlier one that does not is kept as
    sent. The common shape (a string content) is handled inline: this loop is the cost of a
    long conversation."""
    roles = _roles(rest)
    if "user" not in roles:
        raise TemplateMismatch("no user message follows the few-shot turns", "user_message")
    last = len(roles) - 1 - roles[::-1].index("user")
    least = len(prefix) + len(suffix)
    cut = len(prefix)
    for index, role in enumerate(roles):
        if role != "user":
            continue
        message = rest[index]
        content = message.get("content")
        if type(content) is str:  # the common shape, inline
            if (len(content) >= least and content.startswith(prefix)
                    and content.endswith(suffix)):
                text = content[cut: len(content) - len(suffix)]
                if text and not text.isspace():
                    copied = message.copy()
                    copied["content"] = text
                    rest[index] = copied
                    continue
                stripped: object = None
            elif index == last:
                raise _mismatch_of(_strip_str(content, prefix, suffix))
            else:
                continue
        else:
            stripped = _strip_content(content, prefix, suffix)
            if isinstance(stripped, _Miss):
                if index == last:
                    raise _mismatch_of(stripped)
                continue
        if stripped is None:
            if index == last:
                raise TemplateMismatch(
                    f"{_LAST} is nothing but the template's prefix and suffix", "empty")
            continue
        rest[index] = {**message, "content": stripped}


def strip_prompt(
    template: PromptTemplate, prompt: object, *, replacement: str | None = None
) -> str:
    """What varies in a legacy prompt: the prompt without the template's prefix and suffix,
    with `replacement` (a short instruction) in front when given."""
    if not isinstance(prompt, str):
        raise TemplateMismatch("the prompt is not a single string", "prompt")
    if not template.has_prompt_parts:
        raise TemplateMismatch(
            f"template {template.ref} has no prompt prefix or suffix (it is for chat)", "kind")
    stripped = _strip_str(prompt, template.prompt_prefix, template.prompt_suffix)
    if isinstance(stripped, _Miss):
        where = {"prefix": "start with the template's prefix",
                 "suffix": "end with the template's suffix"}.get(stripped)
        message = (f"the prompt does not {where}" if where
                   else "the prompt's prefix and suffix overlap")
        raise TemplateMismatch(message, str(stripped))
    if _blank(stripped):
        raise TemplateMismatch("the prompt is nothing but the template", "empty")
    return stripped if replacement is None else replacement + stripped


def strip_prompts(
    template: PromptTemplate, prompt: object, *, replacement: str | None = None
) -> str | list[str]:
    """`strip_prompt` for a legacy `prompt` that is one string or a batch (a list of strings,
    each its own completion): every element is stripped, or none (the first that does not
    hold the template raises, naming it). Token-id prompts can't be stripped: a mismatch."""
    if isinstance(prompt, str):
        return strip_prompt(template, prompt, replacement=replacement)
    if not isinstance(prompt, list) or not prompt or not all(isinstance(p, str) for p in prompt):
        raise TemplateMismatch("the prompt is neither a string nor a list of strings", "prompt")
    stripped = []
    for index, one in enumerate(prompt):
        try:
            stripped.append(strip_prompt(template, one, replacement=replacement))
        except TemplateMismatch as exc:
            raise TemplateMismatch(f"prompt {index + 1} of {len(prompt)}: {exc.message}",
                                   exc.part) from None
    return stripped


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
