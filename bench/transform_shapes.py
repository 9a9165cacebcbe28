"""Request shapes for bench/transforms.py: ~4k-token chat prompts in the shapes apps send
(one wrapped question, a conversation wrapping every turn, one wrapping only the newest, a
system prompt sent as many text parts) and legacy prompts (one, a batch), each timed with the
current kernel and with the kernel before r13 #7 (`BASELINE_COMMIT`'s
tuneloop/prompt_template.py, read from git), side by side.

Times are CPU time of the calling thread (`time.thread_time`), median of runs: on a shared
machine wall-clock time mostly measures the other processes."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import timeit
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.prompt_template import FEW_SHOT, PREFIX, QUESTION, SUFFIX, SYSTEM
from tuneloop.errors import TemplateMismatch
from tuneloop.prompt_template import PromptTemplate
from tuneloop.request_transforms import TargetTransforms

BASELINE_COMMIT = "ce138e3"  # main before the r13 fixes: the kernel the review measured
ROOT = Path(__file__).resolve().parent.parent


def cpu_us(fn: Callable[[], object], calls: int = 300, runs: int = 7) -> float:
    timer = timeit.Timer(fn, timer=time.thread_time)
    return statistics.median(timer.timeit(calls) / calls * 1e6 for _ in range(runs))


def baseline_kernel() -> types.ModuleType | None:
    """The old tuneloop/prompt_template.py as a module, or None outside a git checkout."""
    try:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{BASELINE_COMMIT}:tuneloop/prompt_template.py"],
            capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("baseline_prompt_template")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, module.__name__, "exec"), module.__dict__)
    return module


@dataclass(frozen=True, slots=True)
class Shape:
    name: str
    endpoint: str
    parts: dict[str, Any]  # the template's parts
    body: dict[str, Any]
    replacement: str | None = None


def _wrapped(i: int, words: int) -> dict[str, Any]:
    return {"role": "user", "content": PREFIX + f"question {i} " + "about it " * words + SUFFIX}


def _answer(i: int, words: int) -> dict[str, Any]:
    return {"role": "assistant", "content": f"answer {i} " + "and so on " * words}


def shapes() -> list[Shape]:
    third = SYSTEM[: len(SYSTEM) // 3]
    chat_parts = {"system_prompt": SYSTEM, "few_shot": FEW_SHOT, "user_prefix": PREFIX,
                  "user_suffix": SUFFIX}
    affixes = {"system_prompt": third, "user_prefix": PREFIX, "user_suffix": SUFFIX}
    head = [{"role": "system", "content": SYSTEM}, *[dict(t) for t in FEW_SHOT]]
    ten: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM[: len(SYSTEM) * 2 // 3]}]
    for i in range(10):
        ten += [_wrapped(i, 20), _answer(i, 20)]
    hundred: list[dict[str, Any]] = [{"role": "system", "content": third}]
    for i in range(100):
        hundred += [_wrapped(i, 1), _answer(i, 1)]
    newest: list[dict[str, Any]] = [{"role": "system", "content": third}]
    for i in range(40):
        newest += [{"role": "user", "content": f"question {i} " + "about it " * 10},
                   _answer(i, 10)]
    newest.append(_wrapped(40, 10))
    pieces = [{"type": "text", "text": SYSTEM[i: i + 16]} for i in range(0, len(SYSTEM), 16)]
    legacy = {"prompt_prefix": SYSTEM, "prompt_suffix": SUFFIX}
    return [
        Shape("chat: 1 wrapped question", "chat.completions", chat_parts,
              {"messages": [*head, {"role": "user", "content": PREFIX + QUESTION + SUFFIX}]},
              "ACME support."),
        Shape("chat: 10 wrapped turns", "chat.completions", {**affixes,
              "system_prompt": ten[0]["content"]}, {"messages": ten}, "ACME support."),
        Shape("chat: 100 wrapped turns", "chat.completions", affixes,
              {"messages": hundred}, "ACME support."),
        Shape("chat: 40 turns, newest wrapped", "chat.completions", affixes,
              {"messages": newest}, "ACME support."),
        Shape(f"chat: system in {len(pieces)} parts", "chat.completions", chat_parts,
              {"messages": [{"role": "system", "content": pieces}, *head[1:],
                            {"role": "user", "content": PREFIX + QUESTION + SUFFIX}]}),
        Shape("chat: mismatch (no suffix)", "chat.completions", chat_parts,
              {"messages": [*head, {"role": "user", "content": PREFIX + QUESTION}]}),
        Shape("legacy: 1 prompt", "completions", legacy,
              {"prompt": SYSTEM + QUESTION + SUFFIX}),
        Shape("legacy: batch of 4 prompts", "completions", legacy,
              {"prompt": [SYSTEM + f"{i} " + QUESTION + SUFFIX for i in range(4)]}),
    ]


def tokens(shape: Shape, count: Callable[[str], int]) -> int:
    body = shape.body
    if "prompt" in body:
        prompt = body["prompt"]
        return sum(map(count, prompt)) if isinstance(prompt, list) else count(prompt)
    total = 0
    for message in body["messages"]:
        content = message["content"]
        total += count(content if isinstance(content, str)
                       else "".join(p["text"] for p in content))
    return total


def measure(shape: Shape, old: types.ModuleType | None) -> tuple[float, float, float | None]:
    """(apply µs: the target's transforms as the proxy runs them, kernel µs now, kernel µs of
    the baseline or None)."""
    template = PromptTemplate(name="bot", version=1, **shape.parts)
    transforms = TargetTransforms(template=template, system_prompt=shape.replacement,
                                  stop="###")
    payload = {"model": "bot", **shape.body}
    apply_us = cpu_us(lambda: transforms.apply(shape.endpoint, payload))
    kernel_us = cpu_us(_kernel_call(sys.modules["tuneloop.prompt_template"], template, shape))
    old_us = None
    if old is not None:
        old_template = old.PromptTemplate(name="bot", version=1, **shape.parts)
        old_us = cpu_us(_kernel_call(old, old_template, shape))
    return apply_us, kernel_us, old_us


def _kernel_call(module: Any, template: Any, shape: Shape) -> Callable[[], object]:
    def call() -> object:
        try:
            if shape.endpoint == "chat.completions":
                return module.strip_messages(template, shape.body["messages"],
                                             system_prompt=shape.replacement)
            prompt = shape.body["prompt"]
            if isinstance(prompt, list):  # the old kernel had no batch: one call per element
                return [module.strip_prompt(template, p) for p in prompt]
            return module.strip_prompt(template, prompt)
        except TemplateMismatch:
            return None
    return call
