"""What covering the arm costs (proxy/arm_cover.py): an alias with an open canary, whose
answers are rewritten so they do not say which arm answered, next to an alias without one
(relayed as is), in the same run.

- per event: a 300-event chat stream read one event per chunk; the capture's assembler alone
  (what every stream pays) and the assembler plus the cover's rewrite (what a covered stream
  pays). CPU µs per event, median of runs.
- per request: a real proxy (uvicorn, DuckDB, logging on) in front of the fake upstream on
  loopback; one client sends the same streamed (the fake's 6 events) and plain chat requests,
  alternating, to an alias with an open 50% canary and to one without: median ms per request,
  and the ratio.
  A latency figure, with client, proxy and upstream sharing this machine's cores.

    PYTHONPATH=$PWD /work/venv/bin/python bench/arm_cover.py [--requests 200]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from bench.prompt_template import timed
from proxy.app import create_app
from proxy.arm_cover import ArmCover
from proxy.assemble import ChatAssembler
from tests.conftest import ADMIN_TOKEN, proxy_settings
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import create_app as create_fake_openai
from tests.fakes.server import serve_app
from tuneloop.client import AdminClient

EVENTS = 300
CANARY = "ft:gpt-4o-mini-2024-07-18:acme::abc123"


def stream_events() -> list[bytes]:
    base = {"id": "chatcmpl-AbC123", "object": "chat.completion.chunk", "created": 1700000000,
            "model": CANARY,
            "system_fingerprint": "fp_0ba0d124f1", "service_tier": "default"}
    events = [b"data: " + orjson.dumps({**base, "choices": [
        {"index": 0, "delta": {"content": f" word{n}"}, "logprobs": None,
         "finish_reason": None}]}) + b"\n\n" for n in range(EVENTS)]
    return [*events, b"data: [DONE]\n\n"]


def per_event_us() -> tuple[float, float]:
    events = stream_events()
    cover = ArmCover("support-bot", ["gpt-4o-mini", CANARY])

    def relayed() -> None:
        assembler = ChatAssembler("")
        for event in events:
            assembler.feed(event)

    def covered() -> None:
        assembler, rewrite = ChatAssembler(""), cover.events("")
        for event in events:
            assembler.feed(event)
            rewrite.feed(event)

    return (timed(relayed, calls=20) / len(events), timed(covered, calls=20) / len(events))


def per_request_ms(client: httpx.Client, url: str, bodies: dict[str, bytes],
                   count: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in bodies}
    for _ in range(count):
        for name, body in bodies.items():
            start = time.perf_counter()
            response = client.post(url, content=body,
                                   headers={"content-type": "application/json"})
            response.raise_for_status()
            samples[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def per_request(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, \
            serve_app(create_fake_openai(FakeOpenAIState())) as fake, \
            serve_app(create_app(proxy_settings(Path(tmp), fake + "/v1"))) as url, \
            httpx.Client(timeout=30) as client:
        admin = AdminClient(url, ADMIN_TOKEN)
        targets = {"targets": [{"model": "gpt-4o-mini"}]}
        admin.put_routes({"covered": targets, "plain": targets})
        admin.promote("covered", CANARY, canary=50)
        bodies = {f"{alias} {kind}": orjson.dumps(
            {"model": alias, "stream": kind == "stream", "user": f"u-{alias}",
             "messages": [{"role": "user", "content": "Tell me about refunds."}]})
            for kind in ("stream", "plain") for alias in ("plain", "covered")}
        per_request_ms(client, f"{url}/v1/chat/completions", bodies, 20)  # warm up
        return per_request_ms(client, f"{url}/v1/chat/completions", bodies, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    relayed, covered = per_event_us()
    print(f"per event ({EVENTS}-event chat stream, one event per chunk; CPU µs, median):")
    print(f"  assembler alone (every stream) {relayed:6.2f} µs; with the cover's rewrite "
          f"{covered:6.2f} µs (+{covered - relayed:.2f} µs, x{covered / relayed:.2f})")
    ms = per_request(args.requests)
    print(f"  a {EVENTS}-event stream: +{(covered - relayed) * EVENTS / 1000:.2f} ms of CPU")
    print(f"per request (real proxy + fake upstream, {args.requests} of each, alternating; "
          f"median ms; the fake streams 6 events):")
    for kind in ("stream", "plain"):
        plain, covered_ms = ms[f"plain {kind}"], ms[f"covered {kind}"]
        print(f"  {kind:6s} no canary {plain:7.2f} ms; open canary (covered) {covered_ms:7.2f}"
              f" ms; ratio {covered_ms / plain:.2f}")


if __name__ == "__main__":
    main()
