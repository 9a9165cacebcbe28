"""One template discovery over logged traffic, bounded: what it may read and where it runs.

Discovery reads the newest requests of an alias (tuneloop/prompt_discovery.py finds what they
share). A request body can be 100 KB and more, and parsed JSON takes several times its size in
Python objects, so a row count alone does not bound it: 5,000 requests of 100 KB took 4.8 GB
and held the event loop's GIL for seconds. Here:

- a byte budget: the bodies read add up to at most `max_bytes` (default
  `DEFAULT_SAMPLE_BYTES`, at most `MAX_SAMPLE_BYTES`), newest first, and one body over
  `MAX_REQUEST_BYTES` is left out; the answer's `read` says what was left out and why;
- the storage hands over raw JSON text in batches (`storage.prompt_templates.request_texts`),
  and `analyse` parses one body at a time, keeping only the part discovery reads (the message
  list or the prompt);
- `analyse` is a module-level function of a picklable `DiscoveryJob`, so the proxy runs it in a
  short-lived worker process (its memory goes back to the system when it ends), or in a thread
  when worker processes are turned off (`index_worker_min_rows = 0`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from tuneloop.prompt_discovery import Sample, discover, sample_of, token_counter

DEFAULT_SAMPLE_BYTES = 16 * 1024 * 1024
MAX_SAMPLE_BYTES = 64 * 1024 * 1024
MAX_REQUEST_BYTES = 1024 * 1024  # one request over this is left out of the sample
BATCH_ROWS = 200  # ids per storage read
PROMPT_ENDPOINTS = ("chat.completions", "completions")


@dataclass(frozen=True, slots=True)
class DiscoveryJob:
    """What one discovery reads: (endpoint, request JSON text, upstream model) rows."""

    alias: str
    threshold: float
    rows: list[tuple[str, str, str | None]] = field(default_factory=list)
    read: dict[str, int] = field(default_factory=dict)


def candidate_id(parts: Mapping[str, Any]) -> str:
    """A candidate's id: a hash of its parts, so the one frozen is exactly the one shown (an
    index may name another candidate once the traffic changed)."""
    canonical = orjson.dumps(dict(parts), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:12]


def analyse(job: DiscoveryJob) -> dict[str, Any]:
    """Candidate templates for the job's rows (CPU work: parsing, matching, token counting)."""
    samples: list[Sample] = []
    tokenizer_model: str | None = None
    unreadable = skipped = 0
    for endpoint, text, upstream_model in job.rows:
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            unreadable += 1  # a row written by hand; discovery reads what it can
            continue
        sample = sample_of(endpoint, request)
        del request  # only the messages (or the prompt) stay
        if sample is not None:
            samples.append(sample)
            tokenizer_model = tokenizer_model or upstream_model
        elif endpoint in PROMPT_ENDPOINTS:
            skipped += 1  # a malformed message list, a batched or token-id prompt
    model = tokenizer_model or job.alias
    found = discover(samples, token_counter(model), job.threshold)
    for candidate in found["candidates"]:
        candidate["id"] = candidate_id(candidate["parts"])
    read = {**job.read, "rows": len(job.rows), "unreadable": unreadable, "skipped": skipped}
    return {"alias": job.alias, "tokenizer_model": model, "read": read, **found}
