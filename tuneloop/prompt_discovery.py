"""Templates from traffic: the prompt parts most requests of an alias (or model) share.

Pure: takes the logged requests (chat message lists and legacy prompts), returns candidate
templates, each with its share of the sample and the tokens it would save per request. The
proxy's admin API reads the sample (storage) and serves this; the CLI and the UI show it.

What is looked for, each shared by at least `threshold` of the chat (or legacy) requests:
- the system prompt (the first message when its role is `system` or `developer`): the most
  common one;
- leading few-shot turns after it: the longest run of identical turns (role, content) that
  ends with an assistant turn and still leaves a user message after it;
- a fixed prefix and suffix of the LAST user message's text: the longest prefix (suffix) that
  `threshold` of the messages start (end) with, cut back to a boundary: a prefix ends with
  white space or a mark that ends a word (`Question:`, not `ACME-` or `O'`), a suffix starts
  with white space (`\\nAnswer briefly.`), so no word is cut;
- for legacy prompts, a fixed prefix and suffix of the prompt, found the same way.

Candidates are every part found together, then smaller sets of parts (fewer parts may match
more requests), ordered by the tokens they would save over the sample (share x tokens), so
candidate 1 is the best one. The share of a candidate is the share of requests of its kind the
whole template matches (`prompt_template.matches_*`), so it is what stripping would achieve.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tuneloop.errors import BadRequest
from tuneloop.prompt_template import (
    SYSTEM_ROLES,
    PromptTemplate,
    matches_messages,
    matches_prompt,
)
from tuneloop.prompt_template import content_as_text as _text
from tuneloop.tokenizers import TOKENS_PER_MESSAGE, encoding_for, load_encoding

DEFAULT_SAMPLE = 2000
MAX_SAMPLE = 5_000  # the sample is parsed in the proxy process: bounded memory
DEFAULT_THRESHOLD = 0.8
MIN_AFFIX_CHARS = 4  # a shorter shared prefix or suffix is not worth a template part
CANDIDATE_NAME = "candidate"
_WORD_END = frozenset(":;,!?)]}>»：；，！？）」』")  # a prefix may end with one

TokenCounter = Callable[[str], int]


@dataclass(frozen=True, slots=True)
class Sample:
    """One logged request: a chat message list, or a legacy prompt."""

    messages: Sequence[Mapping[str, Any]] | None = None
    prompt: str | None = None


def sample_of(endpoint: str, request: object) -> Sample | None:
    """The part of a logged request body discovery reads; None for anything else (another
    endpoint, a batched prompt, a message list that is not objects with a string role: the
    API refuses those, and discovery must never trip on one)."""
    if not isinstance(request, Mapping):
        return None
    if endpoint == "chat.completions":
        messages = request.get("messages")
        if (isinstance(messages, list) and messages and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)):
            return Sample(messages=messages)
    elif endpoint == "completions":
        prompt = request.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if isinstance(prompt, str) and prompt:
            return Sample(prompt=prompt)
    return None


def token_counter(model: str) -> TokenCounter:
    """Tokens of a text with the model's tiktoken encoding (o200k_base, cl100k_base)."""
    encoding = load_encoding(encoding_for(model))
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise BadRequest("threshold must be a number", param="threshold")
    if not 0.5 <= threshold <= 1.0:
        raise BadRequest("threshold must be between 0.5 and 1", param="threshold")
    return float(threshold)


# --- text helpers ---------------------------------------------------------------------------


def _edge_text(content: object, first: bool) -> str | None:
    """The text a prefix (first) or suffix (last) of a user message is looked for in."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        part = content[0] if first else content[-1]
        if isinstance(part, Mapping) and part.get("type") in ("text", "input_text"):
            text = part.get("text")
            return text if isinstance(text, str) else None
    return None


def _common_prefix_length(a: str, b: str) -> int:
    limit = min(len(a), len(b))
    if a[:limit] == b[:limit]:
        return limit
    low, high = 0, limit  # a[:low] == b[:low], a[:high] != b[:high]
    while high - low > 1:
        middle = (low + high) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle
    return low


def shared_prefix(texts: Sequence[str], need: int) -> str:
    """The longest prefix at least `need` of `texts` start with (before boundary cutting).
    Strings sharing a prefix are neighbours once sorted, so it is the longest common prefix of
    the two ends of some window of `need` sorted strings."""
    if need <= 0 or len(texts) < need:
        return ""
    ordered = sorted(texts)
    best = ""
    for start in range(len(ordered) - need + 1):
        first, last = ordered[start], ordered[start + need - 1]
        length = _common_prefix_length(first, last)
        if length > len(best):
            best = first[:length]
    return best


def _prefix_boundary(prefix: str) -> str:
    """Cut back so the prefix ends with white space or a mark that ends a word (`Question:`),
    never inside one (`ACME-`, `O'`, `v1.`)."""
    end = len(prefix)
    while end > 0 and not (prefix[end - 1].isspace() or prefix[end - 1] in _WORD_END):
        end -= 1
    return prefix[:end]


def _suffix_boundary(suffix: str) -> str:
    """Cut forward so the suffix starts with white space."""
    start = 0
    while start < len(suffix) and not suffix[start].isspace():
        start += 1
    return suffix[start:]


def find_prefix(texts: Sequence[str], need: int) -> str:
    prefix = _prefix_boundary(shared_prefix(texts, need))
    return prefix if len(prefix.strip()) >= MIN_AFFIX_CHARS else ""


def find_suffix(texts: Sequence[str], need: int) -> str:
    reversed_texts = [t[::-1] for t in texts]
    suffix = _suffix_boundary(shared_prefix(reversed_texts, need)[::-1])
    return suffix if len(suffix.strip()) >= MIN_AFFIX_CHARS else ""


# --- chat -----------------------------------------------------------------------------------


def _system_prompt(chats: Sequence[Sequence[Mapping[str, Any]]], need: int) -> str | None:
    counts: Counter[str] = Counter()
    for messages in chats:
        first = messages[0]
        if isinstance(first, Mapping) and first.get("role") in SYSTEM_ROLES:
            text = _text(first.get("content"))
            if text:
                counts[text] += 1
    if not counts:
        return None
    text, count = counts.most_common(1)[0]
    return text if count >= need else None


def _turn_key(message: object) -> tuple[str, str | None, str] | None:
    if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant"):
        return None
    if message.get("tool_calls") or message.get("function_call"):
        return None
    text = _text(message.get("content"))
    if text is None:
        return None
    name = message.get("name")
    return (str(message["role"]), name if isinstance(name, str) else None, text)


def _few_shot(
    chats: Sequence[Sequence[Mapping[str, Any]]], system: str | None, need: int
) -> tuple[dict[str, Any], ...]:
    """The longest run of leading turns (after the system prompt) `need` requests share,
    ending with an assistant turn, with a user message after it in each of them. Without a
    shared system prompt, the turns are looked for after each request's own system message."""
    if system is not None:
        groups = [
            (1, m) for m in chats if _is_system(m[0]) and _text(m[0].get("content")) == system
        ]
    else:
        groups = [(1 if _is_system(m[0]) else 0, m) for m in chats]
    chosen: list[tuple[str, str | None, str]] = []
    best: list[tuple[str, str | None, str]] = []
    while groups:
        depth = len(chosen)
        counts: Counter[tuple[str, str | None, str]] = Counter()
        for start, messages in groups:
            if len(messages) > start + depth + 1:  # something follows this turn
                key = _turn_key(messages[start + depth])
                if key is not None:
                    counts[key] += 1
        if not counts:
            break
        key, count = counts.most_common(1)[0]
        if count < need:
            break
        chosen.append(key)
        groups = [
            (start, m)
            for start, m in groups
            if len(m) > start + depth + 1 and _turn_key(m[start + depth]) == key
        ]
        if key[0] == "assistant" and _leaves_user(groups, depth + 1, need):
            best = list(chosen)
    turns = []
    for role, name, text in best:
        turn: dict[str, Any] = {"role": role, "content": text}
        if name is not None:
            turn["name"] = name
        turns.append(turn)
    return tuple(turns)


def _is_system(message: object) -> bool:
    return isinstance(message, Mapping) and message.get("role") in SYSTEM_ROLES


def _leaves_user(
    groups: Sequence[tuple[int, Sequence[Mapping[str, Any]]]], depth: int, need: int
) -> bool:
    with_user = sum(
        1
        for start, m in groups
        if any(isinstance(x, Mapping) and x.get("role") == "user" for x in m[start + depth :])
    )
    return with_user >= need


def _last_user(messages: Sequence[Mapping[str, Any]], start: int) -> Mapping[str, Any] | None:
    for message in reversed(messages[start:]):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return message
    return None


def _chat_parts(chats: Sequence[Sequence[Mapping[str, Any]]], threshold: float) -> dict[str, Any]:
    need = max(1, math.ceil(threshold * len(chats)))
    system = _system_prompt(chats, need)
    few_shot = _few_shot(chats, system, need)
    skip = (1 if system is not None else 0) + len(few_shot)
    heads, tails = [], []
    for messages in chats:
        last = _last_user(messages, skip if len(messages) > skip else 0)
        if last is None:
            continue
        head, tail = _edge_text(last.get("content"), True), _edge_text(last.get("content"), False)
        if head is not None:
            heads.append(head)
        if tail is not None:
            tails.append(tail)
    prefix = find_prefix(heads, need)
    suffix = find_suffix(tails, need)
    return {
        "system_prompt": system,
        "few_shot": few_shot,
        "user_prefix": prefix,
        "user_suffix": suffix,
    }


# --- candidates -----------------------------------------------------------------------------


def _template(parts: Mapping[str, Any]) -> PromptTemplate | None:
    try:
        return PromptTemplate(name=CANDIDATE_NAME, version=1, **parts)
    except BadRequest:
        return None


def part_tokens_of(template: PromptTemplate, count: TokenCounter) -> dict[str, int]:
    tokens: dict[str, int] = {}
    if template.system_prompt is not None:
        tokens["system_prompt"] = count(template.system_prompt) + TOKENS_PER_MESSAGE
    if template.few_shot:
        tokens["few_shot"] = sum(
            count(_text(t.get("content")) or "") + TOKENS_PER_MESSAGE for t in template.few_shot
        )
    for key in ("user_prefix", "user_suffix", "prompt_prefix", "prompt_suffix"):
        text = getattr(template, key)
        if text:
            tokens[key] = count(text)
    return tokens


def _subsets(parts: Mapping[str, Any], keys: Sequence[str]) -> list[dict[str, Any]]:
    """The full set of parts found, then smaller sets (dropping parts from the end)."""
    present = [k for k in keys if parts.get(k)]
    out = []
    for size in range(len(present), 0, -1):
        chosen = set(present[:size])
        out.append({k: (parts[k] if k in chosen else _empty(k)) for k in keys})
    # the system prompt and few-shot turns without the user affixes, and each affix alone
    for key in present:
        out.append({k: (parts[k] if k == key else _empty(k)) for k in keys})
    return out


def _empty(key: str) -> Any:
    return None if key == "system_prompt" else (() if key == "few_shot" else "")


def discover(
    samples: Iterable[Sample], count: TokenCounter, threshold: float = DEFAULT_THRESHOLD
) -> dict[str, Any]:
    """Candidate templates for a sample of logged requests (newest first or any order).

    Returns `{"sample": {"chat": n, "legacy": n}, "threshold": t, "candidates": [...]}`;
    each candidate: `index` (1-based), `kind` (`chat` | `legacy`), `parts` (a template's
    parts, ready to freeze), `matched` and `share` (of that kind's requests), `tokens` (per
    matching request) and `part_tokens`."""
    threshold = check_threshold(threshold)
    chats: list[Sequence[Mapping[str, Any]]] = []
    prompts: list[str] = []
    for sample in samples:
        if sample.messages:
            chats.append(sample.messages)
        elif sample.prompt:
            prompts.append(sample.prompt)
    return _discover(chats, prompts, count, threshold)


def _discover(
    chats: list[Sequence[Mapping[str, Any]]],
    prompts: list[str],
    count: TokenCounter,
    threshold: float,
) -> dict[str, Any]:
    proposals: list[tuple[str, dict[str, Any]]] = []
    if chats:
        parts = _chat_parts(chats, threshold)
        keys = ("system_prompt", "few_shot", "user_prefix", "user_suffix")
        proposals += [("chat", p) for p in _subsets(parts, keys)]
    if prompts:
        need = max(1, math.ceil(threshold * len(prompts)))
        parts = {
            "prompt_prefix": find_prefix(prompts, need),
            "prompt_suffix": find_suffix(prompts, need),
        }
        proposals += [("legacy", p) for p in _subsets(parts, ("prompt_prefix", "prompt_suffix"))]
    candidates: list[dict[str, Any]] = []
    seen: set[str] = set()
    for kind, parts in proposals:
        template = _template(parts)
        if template is None or template.to_json() in seen:
            continue
        seen.add(template.to_json())
        if kind == "chat":
            matched = sum(1 for m in chats if matches_messages(template, m))
            total = len(chats)
        else:
            matched = sum(1 for p in prompts if matches_prompt(template, p))
            total = len(prompts)
        part_tokens = part_tokens_of(template, count)
        candidates.append(
            {
                "kind": kind,
                "parts": template.parts(),
                "matched": matched,
                "share": round(matched / total, 4) if total else 0.0,
                "tokens": sum(part_tokens.values()),
                "part_tokens": part_tokens,
            }
        )
    # most tokens saved per sampled request first (share × tokens), ties: more parts first
    candidates.sort(key=lambda c: (-c["share"] * c["tokens"], -c["tokens"]))
    for index, candidate in enumerate(candidates, 1):
        candidate["index"] = index
    return {
        "sample": {"chat": len(chats), "legacy": len(prompts)},
        "threshold": threshold,
        "candidates": candidates,
    }
