"""Benchmark: export 1,000,000 synthetic chat examples (format, validation, exact token counts,
split, export directory) and print rows/s, seconds and peak memory.

The baseline is measured in the same run: the same pipeline on the first 100,000 examples in
one process (no pool), then on the same 100,000 with the pool; the speed-ups are ratios of
rates. The machine's cores may be shared: each run prints its CPU seconds and how many cores
it had on average, so a slow figure can be told from a busy machine.

    PYTHONPATH=$PWD python bench/export.py [--rows 1000000] [--baseline-rows 100000]

Examples look like a support bot's traffic: a shared system prompt (one of a few), a user
question of 20-80 words, an answer of 40-150 words; 10% are two-turn, 5% call a tool (with
the tool definition, the call, its result and the final answer); sessions of 1-4 examples;
1% are near duplicates (case and whitespace changed) of an earlier example.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from exporter.examples import Example
from exporter.pipeline import ExportOptions, export

_VOCABULARY = """
order package delivery refund account password invoice payment card shipping address tracking
number status update cancel return exchange warranty product size color stock available today
tomorrow week month please thanks could would you help me my the a an is was will be have has
not yet still again when where why how what which can should email phone support team store
online app website login error message charge discount code coupon price total receipt item box
damaged missing late early fast slow premium
"""
WORDS = tuple(_VOCABULARY.split())
SYSTEMS = tuple(
    f"You are the support assistant of {shop}. Be concise and friendly. Answer questions "
    "about orders, shipping, returns and accounts. Never invent order details: ask for the "
    "order number when you need it, and use the lookup_order tool to check an order. "
    "Escalate to a human when the customer asks for one or is upset twice."
    for shop in ("Acme", "Globex", "Initech", "Umbrella", "Hooli")
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Look up an order by its number.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    }
]
POOL = 4096


def _sentences(rng: random.Random, low: int, high: int) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
    out, start = [], 0
    while start < len(words):
        end = start + rng.randint(6, 14)
        sentence = " ".join(words[start:end])
        out.append(sentence[:1].upper() + sentence[1:] + rng.choice((".", ".", "?", "!")))
        start = end
    return " ".join(out)


def synthetic(rows: int, seed: int = 7) -> Iterator[Example]:
    rng = random.Random(seed)
    users = [_sentences(rng, 20, 80) for _ in range(POOL)]
    answers = [_sentences(rng, 40, 150) for _ in range(POOL)]
    session, left = 0, 0
    recent: list[list[dict[str, Any]]] = []
    for i in range(rows):
        if left == 0:
            session, left = i, 1 + (i * 2654435761 >> 7) % 4
        left -= 1
        u, a, kind = (i * 7919) % POOL, (i * 104729 + 17) % POOL, i % 100
        system = {"role": "system", "content": SYSTEMS[i % len(SYSTEMS)]}
        user = {"role": "user", "content": f"{users[u]} My order is #{i:07d}."}
        answer = {"role": "assistant", "content": f"About order #{i:07d}: {answers[a]}"}
        tools = None
        if kind == 0 and recent:
            messages = [
                {**m, "content": "  " + m["content"].upper()} if m["role"] == "user" else m
                for m in recent[i % len(recent)]
            ]
        elif kind < 6:
            call = {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": "lookup_order", "arguments": f'{{"order_id": "{i:07d}"}}'},
            }
            result = {
                "role": "tool",
                "tool_call_id": f"call_{i}",
                "content": '{"status": "shipped"}',
            }
            messages = [system, user, {"role": "assistant", "tool_calls": [call]}, result, answer]
            tools = TOOLS
        elif kind < 16:
            follow = {"role": "user", "content": users[(u + 1) % POOL]}
            messages = [
                system,
                user,
                answer,
                follow,
                {"role": "assistant", "content": answers[a - 1]},
            ]
        else:
            messages = [system, user, answer]
        if len(recent) < 64:
            recent.append(messages)
        yield Example(
            interaction_id=f"0190{i:028x}",
            messages=messages,
            tools=tools,
            revision_id=f"rev-{i:08d}",
            revision=1,
            session_id=f"sess-{session}",
        )


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _peak_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def run(rows: int, workers: int, root: Path) -> tuple[float, dict[str, Any]]:
    """Export `rows` examples; print the phases and CPU time; return (seconds, manifest)."""
    out = root / f"export-{rows}-{workers}"
    main_before, children_before = _cpu_seconds()
    started = time.perf_counter()
    result = export(
        synthetic(rows),
        out,
        ExportOptions(name="bench", base_model="gpt-4o-mini-2024-07-18", workers=workers),
    )
    seconds = time.perf_counter() - started
    main_after, children_after = _cpu_seconds()
    main_cpu, workers_cpu = main_after - main_before, children_after - children_before
    phases = ", ".join(f"{name} {value:.1f} s" for name, value in result.seconds.items())
    print(f"  {rows:,} rows, {workers} worker(s): {phases}")
    print(
        f"  cpu: main {main_cpu:.1f} s + workers {workers_cpu:.1f} s in {seconds:.1f} s wall "
        f"= {(main_cpu + workers_cpu) / seconds:.2f} cores busy on average"
    )
    shutil.rmtree(out)
    return seconds, result.manifest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tuneloop-bench-", dir=args.dir))
    cores = len(os.sched_getaffinity(0))
    try:
        print(f"cores: {cores}, workers: {args.workers}, python {sys.version.split()[0]}")
        print(f"load average before: {os.getloadavg()[0]:.2f} (other processes share the cores)")
        base_s, _ = run(args.baseline_rows, 1, root)
        base_rate = args.baseline_rows / base_s
        print(
            f"baseline, 1 process: {args.baseline_rows:,} rows in {base_s:.1f} s = "
            f"{base_rate:,.0f} rows/s"
        )
        pool_s, _ = run(args.baseline_rows, args.workers, root)
        print(
            f"same rows, {args.workers} workers: {pool_s:.1f} s = "
            f"{args.baseline_rows / pool_s:,.0f} rows/s, speed-up {base_s / pool_s:.2f}x"
        )
        seconds, manifest = run(args.rows, args.workers, root)
        rate = args.rows / seconds
        tokens = sum(manifest["tokens"][side]["total_tokens"] for side in ("train", "validation"))
        counts = manifest["counts"]
        print(
            f"export, {args.workers} workers: {args.rows:,} rows in {seconds:.1f} s = "
            f"{rate:,.0f} rows/s ({tokens / seconds / 1e6:.2f}M tokens/s, {tokens:,} tokens)"
        )
        print(f"  train {counts['train']:,}, validation {counts['validation']:,}")
        print(f"  speed-up over the 1-process baseline: {rate / base_rate:.2f}x")
        main_mib, child_mib = _peak_mib(resource.RUSAGE_SELF), _peak_mib(resource.RUSAGE_CHILDREN)
        total_mib = main_mib + args.workers * child_mib
        print(
            f"peak RSS: main {main_mib:,.0f} MiB, largest worker {child_mib:,.0f} MiB, "
            f"main + {args.workers} workers <= {total_mib:,.0f} MiB"
        )
        met = seconds < 120 and total_mib < 2048
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print(f"target < 120 s and < 2048 MiB: {'met' if met else 'NOT met'}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
