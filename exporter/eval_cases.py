"""What an evaluation asks: the validation examples of an export directory as prompts and
reference answers, the request each model gets, and the answer read from its response.

The two models are asked what production will send each (proxy/transforms.py). The candidate
gets the request as it was trained on: a legacy-format model (babbage-002, davinci-002 and
their fine-tunes) through the completions endpoint with the prompt ending in the export's
separator and with its stop sequence, and without the template the export was stripped of
(promote --from-export gives it the same transforms). The baseline, the current model, gets
the app's request as sent (the template put back, no separator, no stop) with the transforms
its route target has, if any. Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import orjson

from exporter.eval_groups import lineage_group
from exporter.examples import content_text
from exporter.exportdir import ExportDir
from exporter.formats import DEFAULT_SEPARATOR, DEFAULT_STOP
from exporter.tokens import model_info, token_counter
from tuneloop.errors import DatasetError
from tuneloop.prompt_template import SYSTEM_ROLES, PromptTemplate
from tuneloop.request_transforms import TargetTransforms

PROMPT_COMPLETION = ("legacy", "classification")
LEGACY_MAX_TOKENS = 256  # the completions API would stop at 16 tokens otherwise
TOP_LOGPROBS = 5


@dataclass(frozen=True)
class Markers:
    """The prompt separator and the stop sequence a legacy-format model was trained with."""

    separator: str = DEFAULT_SEPARATOR
    stop: str | None = DEFAULT_STOP
    labels: tuple[str, ...] = ()  # classification: the label set (sizes the answer budget)


@dataclass(frozen=True)
class EvalCase:
    line: int  # 1-based line in validation.jsonl
    messages: list[dict[str, Any]]  # the prompt as chat messages
    prompt: str  # the prompt as text ending with the separator, for legacy models
    reference: str
    tools: list[dict[str, Any]] | None = None
    source_id: str | None = None  # the interaction it was exported from (lineage)
    edited: bool = False  # the reference is a reviewer's edit of the logged answer
    as_sent: list[dict[str, Any]] | None = None  # the app's messages, when they differ
    group: str | None = None  # its split group (exporter/eval_groups.py); None: its own
    prompt_as_sent: str | None = None  # legacy: the app's prompt (no separator)


@dataclass(frozen=True)
class Stripped:
    """The template an export was stripped of, and the system prompt put in its place."""

    template: PromptTemplate
    replacement: str | None = None


def _wrapped(content: Any, prefix: str, suffix: str) -> Any:
    if isinstance(content, str):
        return prefix + content + suffix
    parts = [dict(p) if isinstance(p, Mapping) else p for p in content] \
        if isinstance(content, list) else []

    def text_part(index: int) -> bool:  # stripping took the affixes from these parts' texts
        part = parts[index] if parts else None
        return isinstance(part, dict) and part.get("type") in ("text", "input_text") \
            and isinstance(part.get("text"), str)

    if prefix:
        if text_part(0):
            parts[0]["text"] = prefix + parts[0]["text"]
        else:
            parts.insert(0, {"type": "text", "text": prefix})
    if suffix:
        if text_part(-1):
            parts[-1]["text"] = parts[-1]["text"] + suffix
        else:
            parts.append({"type": "text", "text": suffix})
    return parts


def messages_as_sent(messages: list[dict[str, Any]], strip: Stripped) -> list[dict[str, Any]]:
    """An exported example's messages with the template put back: the app's request as
    nearly as the template tells (every user turn wrapped in its prefix and suffix). Used
    for the baseline when the logged request is not at hand (exporter.eval_baseline)."""
    template, rest = strip.template, [dict(m) for m in messages]
    role = "system"
    if (strip.replacement is not None and rest and rest[0].get("role") in SYSTEM_ROLES
            and rest[0].get("content") == strip.replacement):
        role = str(rest.pop(0)["role"])
    head: list[dict[str, Any]] = []
    if template.system_prompt is not None:
        head.append({"role": role, "content": template.system_prompt})
    elif rest and rest[0].get("role") in SYSTEM_ROLES:
        head.append(rest.pop(0))
    head += [dict(turn) for turn in template.few_shot]
    if template.user_prefix or template.user_suffix:
        for message in rest:  # stripping took the affixes from every user turn holding them
            if message.get("role") == "user":
                message["content"] = _wrapped(message.get("content"), template.user_prefix,
                                              template.user_suffix)
    return head + rest


def prompt_as_sent(bare: str, strip: Stripped | None) -> str:
    if strip is None or not strip.template.has_prompt_parts:
        return bare
    if strip.replacement and bare.startswith(strip.replacement):
        bare = bare[len(strip.replacement):]
    return strip.template.prompt_prefix + bare + strip.template.prompt_suffix


def answer_text(message: Mapping[str, Any]) -> str:
    """The text of an assistant answer; a tool call answer as compact JSON of its calls."""
    calls = message.get("tool_calls")
    if calls:
        return orjson.dumps([
            {"name": (c.get("function") or {}).get("name"),
             "arguments": (c.get("function") or {}).get("arguments")}
            for c in calls if isinstance(c, Mapping)
        ]).decode()
    return content_text(message.get("content")).strip()


def strip_completion(text: str, stop: str | None) -> str:
    if stop and stop in text:
        text = text[: text.index(stop)]
    return text.strip()


def _prompt_text(messages: list[dict[str, Any]], separator: str) -> str:
    if len(messages) == 1 and messages[0].get("role") == "user":
        text = content_text(messages[0].get("content"))
    else:
        text = "\n".join(f"{str(m.get('role', '')).capitalize()}: "
                         f"{content_text(m.get('content'))}" for m in messages)
    return text if text.endswith(separator) else text + separator


def _case(line: int, row: dict[str, Any], fmt: str, markers: Markers,
          strip: Stripped | None = None) -> EvalCase:
    if fmt in PROMPT_COMPLETION:
        prompt = str(row["prompt"])
        bare = prompt[: -len(markers.separator)] if prompt.endswith(markers.separator) \
            else prompt
        return EvalCase(line, [{"role": "user", "content": bare}], prompt,
                        strip_completion(str(row["completion"]), markers.stop),
                        prompt_as_sent=prompt_as_sent(bare, strip))
    if fmt == "preference":
        messages, answer = row["input"]["messages"], row["preferred_output"][0]
        tools = row["input"].get("tools")
    else:
        messages, answer = row["messages"][:-1], row["messages"][-1]
        tools = row.get("tools")
    as_sent = messages_as_sent(messages, strip) if strip and strip.template.has_chat_parts \
        else None
    return EvalCase(line, messages, _prompt_text(messages, markers.separator),
                    answer_text(answer), tools, as_sent=as_sent)


def load_cases(export: ExportDir, limit: int | None = None, strip: Stripped | None = None
               ) -> tuple[list[EvalCase], Markers]:
    """The validation examples (the first `limit`), and the legacy markers of the export;
    `strip`: the template the export was stripped of (its manifest's `template`)."""
    fmt = export.format
    manifest = export.manifest
    labels = (manifest.get("classification") or {}).get("labels") or {}
    markers = Markers(manifest.get("prompt_separator") or DEFAULT_SEPARATOR,
                      manifest.get("stop") if fmt in PROMPT_COMPLETION else DEFAULT_STOP,
                      tuple(sorted(labels)) if fmt == "classification" else ())
    if export.validation is None:
        raise DatasetError(f"{export.path} has no validation examples to evaluate on "
                           "(export with a validation fraction above 0)")
    cases: list[EvalCase] = []
    lineage = export.validation_lineage()
    with export.validation.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if limit is not None and len(cases) >= limit:
                break
            if line.strip():
                try:
                    record = lineage.get(number) or {}
                    source = record.get("interaction_id")
                    case = _case(number, orjson.loads(line), fmt, markers, strip)
                    cases.append(replace(case, source_id=str(source) if source else None,
                                         edited=record.get("edited") is True,
                                         group=lineage_group(record, case.messages)))
                except (KeyError, IndexError, TypeError, orjson.JSONDecodeError) as exc:
                    raise DatasetError(f"validation.jsonl line {number} is not a {fmt} "
                                       f"example: {exc!r}") from exc
    return cases, markers


def is_legacy(model: str) -> bool:
    return model_info(model).legacy


@lru_cache(maxsize=256)
def label_budget(model: str, markers: Markers) -> int | None:
    """Classification: the tokens of the longest completion as trained (` label` and the stop
    sequence), so a model can't ramble past a label; None for other exports."""
    if not markers.labels:
        return None
    count = token_counter(model_info(model).encoding).text
    return max(count(" " + label + (markers.stop or "")) for label in markers.labels)


def request_for(case: EvalCase, model: str, markers: Markers, *, max_tokens: int | None,
                logprobs: bool, as_sent: bool = False,
                transforms: TargetTransforms | None = None) -> tuple[str, dict[str, Any]]:
    """(endpoint, body) for asking `model` about `case`, deterministically (temperature 0):
    as trained, or with `as_sent` the app's request with the `transforms` its route target
    applies (tuneloop.request_transforms: what production sends it)."""
    endpoint, body = _request(case, model, markers, max_tokens=max_tokens, logprobs=logprobs,
                              as_sent=as_sent)
    if as_sent and transforms is not None:
        body = transforms.apply(endpoint, body).payload or body
    return endpoint, body


def _request(case: EvalCase, model: str, markers: Markers, *, max_tokens: int | None,
             logprobs: bool, as_sent: bool) -> tuple[str, dict[str, Any]]:
    max_tokens = max_tokens or label_budget(model, markers)
    if is_legacy(model):
        prompt = case.prompt_as_sent if as_sent and case.prompt_as_sent is not None \
            else case.prompt
        body: dict[str, Any] = {"model": model, "prompt": prompt, "temperature": 0,
                                "max_tokens": max_tokens or LEGACY_MAX_TOKENS}
        if markers.stop and not (as_sent and case.prompt_as_sent is not None):
            body["stop"] = markers.stop
        if logprobs:
            body["logprobs"] = TOP_LOGPROBS
        return "completions", body
    messages = case.as_sent if as_sent and case.as_sent is not None else case.messages
    body = {"model": model, "messages": messages, "temperature": 0}
    if case.tools:
        body["tools"] = case.tools
    if max_tokens:
        body["max_tokens"] = max_tokens
    if markers.labels and markers.stop:
        body["stop"] = markers.stop
    if logprobs:
        body |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
    return "chat.completions", body


def read_answer(endpoint: str, response: Mapping[str, Any],
                markers: Markers) -> tuple[str, dict[str, float] | None]:
    """The answer text and, when the response has them, the first token's top logprobs."""
    choices = response.get("choices") or [{}]
    choice = choices[0]
    logprobs = choice.get("logprobs") or {}
    if endpoint == "completions":
        firsts = logprobs.get("top_logprobs") or [None]
        top = dict(firsts[0]) if isinstance(firsts[0], Mapping) else None
        return strip_completion(str(choice.get("text") or ""), markers.stop), top
    content = logprobs.get("content") or [{}]
    candidates = content[0].get("top_logprobs") if isinstance(content[0], Mapping) else None
    top = {c["token"]: c["logprob"] for c in candidates} if candidates else None
    return answer_text(choice.get("message") or {}), top
