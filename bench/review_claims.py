"""The review app's queue calls at scale: the pending list as the API asks for it (trainable
items only), the next-item claim, and the exact progress counts, on N synthetic interactions
(default 1,000,000: chat with short texts, 2% upstream errors, 1% cut streams, 0.5% empty
answers, 3% embeddings, 5% reviewed), seeded in bulk through Arrow or reused with --db.

    PYTHONPATH=$PWD python bench/review_claims.py [--rows N] [--db PATH] [--runs N]

Times are warm, p50/p99 in ms, on whatever cores the machine has.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.review_queries import timed
from storage.db import Connection, connect
from storage.interactions import InteractionFilter
from storage.items import list_review_items
from storage.migrations import migrate
from storage.progress import progress
from storage.queue import ReviewQuery, next_item
from storage.records import INTERACTION_SCHEMA, insert_interactions
from storage.review import ReviewAction, apply_reviews

CHUNK = 100_000


def seed(con: Connection, rows: int, rng: np.random.Generator) -> None:
    millis = np.sort(rng.integers(0, 90 * 86_400_000, rows)) + 1_750_000_000_000
    rand = rng.integers(0, 2**62, rows, dtype=np.int64)
    ids = np.array([f"{m >> 16:08x}-{m & 0xFFFF:04x}-7{r & 0xFFF:03x}-{8 + (r >> 58 & 3):x}"
                    f"{r >> 12 & 0xFFF:03x}-{r >> 24 & 0xFFFFFFFFFFFF:012x}"
                    for m, r in zip(millis.tolist(), rand.tolist(), strict=True)])
    for start in range(0, rows, CHUNK):
        stop = min(rows, start + CHUNK)
        n = stop - start
        kind = rng.random(n)
        status = np.where(kind < 0.02, 500, 200)
        finish = np.where(kind < 0.02, "upstream_error",
                          np.where(kind < 0.03, "upstream_cut", "completed"))
        embedding = (kind >= 0.03) & (kind < 0.06)
        empty = (kind >= 0.06) & (kind < 0.065)
        number = np.arange(start, stop)
        requests = [f'{{"messages": [{{"role": "user", "content": "question {k}"}}]}}'
                    for k in number.tolist()]
        responses = [
            '{"error": {"message": "boom"}}' if s == 500 else
            f'{{"choices": [{{"index": 0, "message": {{"role": "assistant", "content": '
            f'"{"" if e else f"answer {k}"}"}}}}]}}'
            for k, s, e in zip(number.tolist(), status.tolist(), empty.tolist(), strict=True)]
        table = pa.table({
            "id": pa.array(ids[start:stop]),
            "created_at": pa.array(millis[start:stop] * 1000, pa.timestamp("us", tz="UTC")),
            "endpoint": pa.array(np.where(embedding, "embeddings", "chat.completions")),
            "model": pa.array(np.where(rng.random(n) < 0.3, "gpt-4o", "gpt-4o-mini")),
            "traffic": pa.array(["production"] * n), "request": pa.array(requests),
            "response": pa.array(responses), "status_code": pa.array(status.astype(np.int32)),
            "finish": pa.array(finish), "stream": pa.array(finish == "upstream_cut"),
        })
        full = pa.table({name: table[name] if name in table.column_names
                         else pa.nulls(n, field.type)
                         for name, field in zip(INTERACTION_SCHEMA.names, INTERACTION_SCHEMA,
                                                strict=True)}, schema=INTERACTION_SCHEMA)
        insert_interactions(con, full)
    chat = con.execute("SELECT id FROM interactions WHERE endpoint = 'chat.completions' "
                       "AND status_code = 200 AND finish = 'completed'").fetchall()
    picked = rng.choice(len(chat), len(chat) // 20, replace=False)
    actions = rng.choice(["approve", "approve", "reject"], len(picked))
    apply_reviews(con, [ReviewAction(chat[i][0], str(a), f"reviewer-{n % 8}")
                        for n, (i, a) in enumerate(zip(picked, actions, strict=True))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--db", type=Path, default=None,
                        help="keep the seeded file here (reused when it exists)")
    args = parser.parse_args()
    workdir = tempfile.TemporaryDirectory(prefix="tuneloop-bench-")
    path = args.db or Path(workdir.name) / "bench.duckdb"
    fresh = not path.exists()
    con = connect(path)
    migrate(con)
    if fresh:
        seed(con, args.rows, np.random.default_rng(42))
        con.execute("CHECKPOINT")
    total = con.execute("SELECT count(*) FROM interactions").fetchall()[0][0]
    queue = ReviewQuery(review="pending", trainable=True)
    for k in range(8):  # eight reviewers at work
        next_item(con, queue, f"other-{k}", 300)
    state = {"skip": [] if (first := next_item(con, queue, "me", 300)) is None
             else [first.interaction_id]}

    def skip_to_next() -> None:
        taken = next_item(con, queue, "me", 300, skip=state["skip"][-50:])
        if taken is not None:
            state["skip"].append(taken.interaction_id)

    cases = [
        ("queue list, pending + trainable (API default), 50 rows",
         lambda: list_review_items(con, queue, limit=50, compact=True)),
        ("queue list, pending, trainable=false, 50 rows",
         lambda: list_review_items(con, ReviewQuery(review="pending", trainable=False),
                                   limit=50, compact=True)),
        ("next item: the reviewer's own claim (reload)",
         lambda: next_item(con, queue, "other-0", 300)),
        ("next item: skip to a fresh one (8 others hold claims)", skip_to_next),
        ("progress: exact counts", lambda: progress(con, queue, "reviewer-1")),
        ("progress: exact counts, model filter",
         lambda: progress(con, ReviewQuery(review="pending", trainable=True,
                                           base=InteractionFilter(model="gpt-4o")),
                          "reviewer-1")),
    ]
    print(f"\n{total:,} interactions; {args.runs} timed runs per call after one warm-up\n")
    width = max(len(label) for label, _ in cases)
    print(f"{'call':<{width}}  {'p50 ms':>8}  {'p99 ms':>8}")
    print("-" * (width + 20))
    for label, fn in cases:
        p50, p99 = timed(fn, args.runs)
        print(f"{label:<{width}}  {p50:8.1f}  {p99:8.1f}", flush=True)
    print("\n", progress(con, queue, "reviewer-1"))
    con.close()
    workdir.cleanup()


if __name__ == "__main__":
    main()
