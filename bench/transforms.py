"""Per-request cost of a route target's transforms (proxy/transforms.py) on a ~4k-token chat
prompt (bench/prompt_template.py's: a ~3k-token system prompt, four few-shot turns, a user
message with a fixed prefix and suffix) and a ~4k-token legacy prompt, next to the proxy's own
per-request cost without transforms.

- transforms: `proxy.forward.body_for` (what the proxy runs per attempt) for a target with
  `strip_template` + `replace_system_prompt` + `stop` (chat) or `strip_template` +
  `legacy_separator` + `stop` (legacy), minus the same for a target without transforms (the
  alias's body is rewritten and serialized either way). Median of runs, µs per request.
- proxy: a real proxy (uvicorn, DuckDB, logging on) in front of a fake upstream on loopback;
  one client sends the same chat body sequentially to an alias without transforms and straight
  to the fake: the median difference per request is the proxy's cost (a latency figure, with
  client, server and upstream sharing this machine's cores).
- shapes (bench/transform_shapes.py): ~4k-token prompts in several shapes (conversations
  wrapping every turn, a system prompt in many text parts, batched legacy prompts...), the
  transforms' CPU time per request, and the kernel's next to the kernel before the r13 fixes
  (ratio old / new).

    PYTHONPATH=$PWD /work/venv/bin/python bench/transforms.py [--requests 300] [--shapes-only]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import transform_shapes
from bench.prompt_template import FEW_SHOT, PREFIX, QUESTION, SUFFIX, SYSTEM, timed
from proxy.app import create_app
from proxy.forward import body_for
from proxy.routing import Attempt, Target
from proxy.transforms import TargetTransforms
from tests.conftest import ADMIN_TOKEN, proxy_settings
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import create_app as create_fake_openai
from tests.fakes.server import serve_app
from tuneloop.prompt_template import PromptTemplate
from tuneloop.tokenizers import load_encoding


def _attempt(transforms: TargetTransforms | None) -> Attempt:
    return Attempt(Target(model="ft:gpt-4o-mini-2024-07-18:acme::x"), "bot", "primary",
                   transforms=transforms)


def added_cost(endpoint: str, payload: dict[str, Any],
               transforms: TargetTransforms) -> tuple[float, float]:
    """(the transforms alone, the net added cost of the attempt's body) in µs."""
    raw = orjson.dumps(payload)
    assert body_for(_attempt(transforms), endpoint, raw, payload).mismatch is None
    alone = timed(lambda: transforms.apply(endpoint, payload))
    plain = timed(lambda: body_for(_attempt(None), endpoint, raw, payload))
    transformed = timed(lambda: body_for(_attempt(transforms), endpoint, raw, payload))
    return alone, transformed - plain


def per_request_ms(client: httpx.Client, url: str, body: bytes, count: int) -> float:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        response = client.post(url, content=body, headers={"content-type": "application/json"})
        samples.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return statistics.median(samples)


def proxy_cost_us(body: dict[str, Any], count: int) -> float:
    """The proxy's per-request cost without transforms: proxy minus direct, median µs."""
    state = FakeOpenAIState()
    with tempfile.TemporaryDirectory() as tmp, serve_app(create_fake_openai(state)) as fake:
        settings = proxy_settings(Path(tmp), fake + "/v1")
        with serve_app(create_app(settings)) as url, httpx.Client(timeout=30) as client:
            client.put(f"{url}/admin/routes", headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                       json={"plain": {"targets": [{"model": "gpt-4o-mini"}]}}
                       ).raise_for_status()
            via = orjson.dumps({**body, "model": "plain"})
            direct = orjson.dumps({**body, "model": "gpt-4o-mini"})
            urls = (f"{url}/v1/chat/completions", f"{fake}/v1/chat/completions")
            per_request_ms(client, urls[0], via, 20)  # warm both paths
            per_request_ms(client, urls[1], direct, 20)
            rounds = [(per_request_ms(client, urls[0], via, count // 3),
                       per_request_ms(client, urls[1], direct, count // 3))
                      for _ in range(3)]
    return statistics.median(proxied - straight for proxied, straight in rounds) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--shapes-only", action="store_true",
                        help="only the per-shape CPU times (no proxy started)")
    args = parser.parse_args()
    print_shapes()
    if args.shapes_only:
        return
    chat = PromptTemplate(name="support-bot", version=1, system_prompt=SYSTEM,
                          few_shot=FEW_SHOT, user_prefix=PREFIX, user_suffix=SUFFIX)
    messages = [{"role": "system", "content": SYSTEM}, *[dict(t) for t in FEW_SHOT],
                {"role": "user", "content": PREFIX + QUESTION + SUFFIX}]
    legacy = PromptTemplate(name="qa", version=1, prompt_prefix=SYSTEM, prompt_suffix=SUFFIX)
    prompt = SYSTEM + QUESTION + SUFFIX
    enc = load_encoding("o200k_base")
    chat_tokens = sum(len(enc.encode(str(m["content"]))) for m in messages)
    legacy_tokens = len(enc.encode(prompt))
    chat_body = {"model": "bot", "messages": messages, "temperature": 0}
    chat_us = added_cost("chat.completions", chat_body, TargetTransforms(
        template=chat, system_prompt="ACME support.", stop="###"))
    legacy_us = added_cost("completions", {"model": "bot", "prompt": prompt}, TargetTransforms(
        template=legacy, separator="\n\n###\n\n", stop="###"))
    proxy_us = proxy_cost_us(chat_body, args.requests)
    print("transforms per request: applying them alone; net (proxy.forward.body_for with minus "
          "without: the stripped body is shorter to serialize)")
    print(f"  chat   {chat_tokens:5d} tokens: strip_template + replace_system_prompt + stop "
          f"{chat_us[0]:6.1f} µs; net {chat_us[1]:+6.1f} µs")
    print(f"  legacy {legacy_tokens:5d} tokens: strip_template + legacy_separator + stop  "
          f"{legacy_us[0]:6.1f} µs; net {legacy_us[1]:+6.1f} µs")
    print(f"proxy per request without transforms (same chat body, proxy minus direct, median "
          f"of {args.requests} sequential requests): {proxy_us:7.1f} µs")
    print(f"ratio (transforms alone / proxy): chat {chat_us[0] / proxy_us:.1%}, legacy "
          f"{legacy_us[0] / proxy_us:.1%} (target: transforms < 50 µs)")


def print_shapes() -> None:
    old = transform_shapes.baseline_kernel()
    enc = load_encoding("o200k_base")
    count = lambda text: len(enc.encode(text, disallowed_special=()))  # noqa: E731
    print("per shape, CPU µs per request (thread time, median): the target's transforms "
          "(strip + system prompt or separator + stop); the template kernel now and before "
          f"(git {transform_shapes.BASELINE_COMMIT}; old/new)")
    for shape in transform_shapes.shapes():
        apply_us, kernel_us, old_us = transform_shapes.measure(shape, old)
        before = (f"{old_us:8.1f} µs  x{old_us / kernel_us:4.1f}" if old_us is not None
                  else "     n/a (not a git checkout)")
        print(f"  {shape.name:34s} {transform_shapes.tokens(shape, count):5d} tokens: "
              f"transforms {apply_us:7.1f} µs; kernel {kernel_us:7.1f} µs, before {before}")


if __name__ == "__main__":
    main()
