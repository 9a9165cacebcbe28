"""Review queries at scale: seed N synthetic interactions (default 1,000,000) into a DuckDB
file, then time the real storage functions the admin API calls and print p50/p99.

    PYTHONPATH=$PWD python bench/review_queries.py [--rows N] [--db PATH|URL] [--ui]

With `--db postgresql://...` the same seeding and queries run on Postgres (a database you
started: the bench starts no server; an empty database is seeded, a seeded one reused).

Seeding builds Arrow tables with numpy and inserts them in bulk (interactions, the term index,
reviews through the real `apply_reviews`, tags, feedback). Every item shares one system prompt;
a tenth of the prompts end with a Japanese/Chinese sentence (no spaces). The term index is
built by the ingest hook's own `forward_index` from each field's text (skipping only the JSON
parsing), and a sample of it is checked against the hook before timing.
With `--ui`, a real proxy serves the file and the queue page of the Streamlit app is rendered
with AppTest against it. Times are warm (the DuckDB buffer pool holds the data), on whatever
cores the machine has; the leading-wildcard ILIKE baseline is measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage.backend import DATABASE_ERRORS, is_postgres, is_postgres_url, staged
from storage.backend.pg_connection import PgConnection
from storage.backend.pg_database import json_as_text
from storage.db import Connection, connect
from storage.interactions import InteractionFilter
from storage.items import list_review_items, review_item
from storage.migrations import migrate
from storage.queue import ReviewQuery
from storage.records import INTERACTION_SCHEMA, insert_interactions
from storage.review import ReviewAction, apply_reviews, undo
from storage.search_index import batch_forward_index, forward_index, store_forward_index
from storage.search_text import stems, term_key, terms_of
from storage.stats import review_stats
from storage.tags import change_tags

SYSTEM = "You are a helpful support assistant"
MODELS = np.array(["gpt-4o-mini", "gpt-4o", "support-bot", "ft:gpt-4o-mini:acme::v3", "llama"])
TAGS = np.array(["support", "billing", "tier:gold", "beta", "mobile"])
CHUNK = 100_000
VOCABULARY = 40_000
CJK_SHARE = 0.1  # of interactions with a Japanese/Chinese sentence (no spaces) in the prompt
CJK_VOCABULARY = 5_000
KANA_KANJI = [chr(c) for c in range(0x30A1, 0x30F7)] + [chr(c) for c in range(0x4E00, 0x5200)]


def vocabulary(rng: np.random.Generator, size: int) -> np.ndarray:
    lengths = rng.integers(3, 11, size)
    letters = rng.integers(97, 123, (size, 10), dtype=np.uint8)
    words = {bytes(row[:n]).decode() for row, n in zip(letters, lengths, strict=True)}
    system = set(terms_of(SYSTEM))  # kept out: search by default leaves the system prompt out
    return np.array(sorted(w for w in words if stems([w])[0] not in system))


def cjk_vocabulary(rng: np.random.Generator, size: int) -> np.ndarray:
    """Words of 2 to 5 katakana or kanji (written without spaces between them)."""
    chars = np.array(KANA_KANJI)
    return np.array(sorted({"".join(chars[rng.integers(0, len(chars), n)])
                            for n in rng.integers(2, 6, size)}))


def seed(con: Connection, rows: int, rng: np.random.Generator) -> dict[str, Any]:
    started = time.perf_counter()
    vocab = vocabulary(rng, VOCABULARY)
    vocab_arrow = pa.array(vocab)
    cjk = cjk_vocabulary(rng, CJK_VOCABULARY)
    base_ms = 1_750_000_000_000
    millis = np.sort(rng.integers(0, 90 * 86_400_000, rows)) + base_ms
    rand = rng.integers(0, 2**62, rows, dtype=np.int64)
    ids = np.array([f"{m >> 16:08x}-{m & 0xFFFF:04x}-7{r & 0xFFF:03x}-{8 + (r >> 58 & 3):x}"
                    f"{r >> 12 & 0xFFF:03x}-{r >> 24 & 0xFFFFFFFFFFFF:012x}"
                    for m, r in zip(millis.tolist(), rand.tolist(), strict=True)])
    embeddings = rng.random(rows) < 0.03
    doc_frequency = np.zeros(len(vocab), dtype=np.int64)
    for start in range(0, rows, CHUNK):
        stop = min(rows, start + CHUNK)
        n = stop - start
        prompt_len = rng.integers(8, 80, n)
        answer_len = rng.integers(5, 60, n)
        prompt_words = np.minimum(rng.zipf(1.25, prompt_len.sum()) - 1, len(vocab) - 1)
        answer_words = np.minimum(rng.zipf(1.25, answer_len.sum()) - 1, len(vocab) - 1)

        def texts(words: np.ndarray, lengths: np.ndarray) -> pa.Array:
            offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
            lists = pa.ListArray.from_arrays(offsets, pc.take(vocab_arrow, pa.array(words)))
            return pc.binary_join(lists, " ")

        prompts, answers = texts(prompt_words, prompt_len), texts(answer_words, answer_len)
        # a Japanese/Chinese sentence after some prompts: CJK words joined without spaces
        has_cjk = rng.random(n) < CJK_SHARE
        cjk_len = np.where(has_cjk, rng.integers(3, 12, n), 0)
        cjk_words = np.minimum(rng.zipf(1.3, cjk_len.sum()) - 1, len(cjk) - 1)
        sentences = pc.binary_join(pa.ListArray.from_arrays(
            pa.array(np.concatenate([[0], np.cumsum(cjk_len)]).astype(np.int32)),
            pc.take(pa.array(cjk), pa.array(cjk_words))), "")
        prompts = pc.binary_join_element_wise(prompts, sentences, " ")
        request = pc.binary_join_element_wise(
            '{"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "' + SYSTEM
            + '"}, {"role": "user", "content": "', prompts, '"}]}', "")
        response = pc.binary_join_element_wise(
            '{"object": "chat.completion", "choices": [{"index": 0, "message": {"role": '
            '"assistant", "content": "', answers, '"}, "finish_reason": "stop"}]}', "")
        is_embedding = embeddings[start:stop]
        status = np.where(rng.random(n) < 0.02, 500, 200).astype(np.int32)
        tags = [[str(TAGS[k])] if k < len(TAGS) else [] for k in rng.integers(0, 12, n)]
        table = pa.table({
            "id": pa.array(ids[start:stop]),
            "created_at": pa.array(millis[start:stop] * 1000, pa.timestamp("us", tz="UTC")),
            "endpoint": pa.array(np.where(is_embedding, "embeddings", "chat.completions")),
            "model": pa.array(MODELS[rng.integers(0, len(MODELS), n)]),
            "upstream_model": pa.array(MODELS[rng.integers(0, len(MODELS), n)]),
            "provider": pa.nulls(n, pa.string()), "route": pa.nulls(n, pa.string()),
            "traffic": pa.array(["production"] * n),
            "request": request, "response": response,
            "status_code": pa.array(status),
            "finish": pa.array(np.where(status == 200, "completed", "upstream_error")),
            "error": pa.array([None if s == 200 else "upstream said 500" for s in status]),
            "latency_ms": pa.array(rng.gamma(2, 400, n)), "ttfb_ms": pa.array(rng.gamma(2, 80, n)),
            "prompt_tokens": pa.array((prompt_len * 1.3 + 12).astype(np.int32)),
            "completion_tokens": pa.array((answer_len * 1.3).astype(np.int32)),
            "cost_usd": pa.array(rng.random(n) / 1000), "stream": pa.array(rng.random(n) < 0.5),
            "tags": pa.array(tags, pa.list_(pa.string())),
            "user_id": pa.array([f"user-{u}" for u in rng.integers(0, 20_000, n)]),
            "session_id": pa.array([f"s-{u}" for u in rng.integers(0, 200_000, n)]),
            "metadata": pa.nulls(n, pa.string()),
            "usage_estimated": pa.array([False] * n), "source_id": pa.nulls(n, pa.string()),
            "sent_request": pa.nulls(n, pa.string()),
        }, schema=INTERACTION_SCHEMA)
        con.execute("BEGIN TRANSACTION")
        insert_interactions(con, table)
        # the term index, as the ingest hook computes it, from each field's text
        keys = np.unique(np.concatenate([np.repeat(np.arange(n), prompt_len),
                                         np.repeat(np.arange(n), answer_len)]).astype(np.int64)
                         * len(vocab) + np.concatenate([prompt_words, answer_words]))
        np.add.at(doc_frequency, (keys % len(vocab))[~is_embedding[keys // len(vocab)]], 1)
        docs = np.flatnonzero(~is_embedding)
        store_forward_index(con, forward_index(
            ids[start:stop][docs].tolist(),
            list(zip([SYSTEM] * len(docs), pc.take(prompts, pa.array(docs)).to_pylist(),
                     pc.take(answers, pa.array(docs)).to_pylist(), strict=True))))
        con.execute("COMMIT")
        print(f"  seeded {stop:>9,} interactions  ({time.perf_counter() - started:5.1f} s)",
              file=sys.stderr)
    return {"ids": ids, "embeddings": embeddings, "vocab": vocab, "df": doc_frequency,
            "cjk": cjk, "seconds": time.perf_counter() - started}


def seed_reviews(con: Connection, world: dict[str, Any], rng: np.random.Generator) -> None:
    ids, reviewable = world["ids"], np.flatnonzero(~world["embeddings"])
    newest = reviewable[-3000:]  # reviewers work the queue from the top
    spread = rng.choice(reviewable[:-3000], size=len(reviewable) // 20, replace=False)
    chosen = np.concatenate([newest, spread])
    actions = rng.choice(["approve", "approve", "approve", "reject", "needs_work"], len(chosen))
    reviewers = [f"reviewer-{k}" for k in range(8)]
    apply_reviews(con, [ReviewAction(str(ids[i]), str(a), reviewers[n % 8], None, None, None,
                                     "reviewer") for n, (i, a) in enumerate(
                                         zip(chosen, actions, strict=True))])
    change_tags(con, [str(ids[i]) for i in rng.choice(reviewable, 5000, replace=False)],
                ["golden"], [], "reviewer-0")
    picked = rng.choice(reviewable, min(20_000, len(reviewable) // 2), replace=False)
    feedback = pa.table({
        "id": [f"fb_{k}" for k in range(len(picked))],
        "interaction_id": pa.array(ids[picked]),
        "score": pa.array(rng.choice([-1.0, -0.5, 0.5, 1.0], len(picked))),
        "comment": pa.nulls(len(picked), pa.string()), "source": pa.nulls(len(picked), pa.string()),
        "created_at": pa.array([time.time_ns() // 1000] * len(picked),
                               pa.timestamp("us", tz="UTC"))})
    columns = ", ".join(feedback.schema.names)
    with staged(con, "_feedback", feedback, like="feedback"):
        con.execute(f"INSERT INTO feedback ({columns}) SELECT {columns} FROM _feedback")
    # one item with a history: edit, undo, approve
    item = str(ids[reviewable[len(reviewable) // 2]])
    original = review_item(con, item)["original"]
    edited = [*original[:-1], {"role": "assistant", "content": "a better answer"}]
    apply_reviews(con, [ReviewAction(item, "edit", "reviewer-1", "tone", edited, 0)])
    undo(con, item, "reviewer-1")
    apply_reviews(con, [ReviewAction(item, "approve", "reviewer-2", None, None, 2)])
    world["history_item"] = item


def check_index(con: Connection, world: dict[str, Any], rng: np.random.Generator) -> None:
    """The seeded index must be what the ingest hook would have written."""
    for k in rng.choice(np.flatnonzero(~world["embeddings"]), 50, replace=False):
        item_id = str(world["ids"][k])
        row = pa.Table.from_pylist([dict(zip(
            ["id", "endpoint", "request", "response"], found, strict=True))
            for found in con.execute(
                "SELECT id, endpoint, request::VARCHAR AS request, "
                "response::VARCHAR AS response FROM interactions WHERE id = ?",
                [item_id]).fetchall()])
        expected = batch_forward_index(row).docs.to_pylist()[0]
        keys, fields = con.execute("SELECT term_keys, term_fields FROM search_docs "
                                   "WHERE interaction_id = ?", [item_id]).fetchall()[0]
        stored = dict(con.execute("SELECT term_key, fields FROM search_terms WHERE "
                                  "interaction_id = ?", [item_id]).fetchall())
        hook = dict(zip(expected["term_keys"], expected["term_fields"], strict=True))
        assert dict(zip(keys, fields, strict=True)) == hook == stored, \
            f"seeded index differs from the hook's for {item_id}"


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    fn()  # warm
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def term_with_df(world: dict[str, Any], target: int) -> tuple[str, int]:
    df = world["df"]
    index = int(np.argmin(np.abs(df - target)))
    return str(world["vocab"][index]), int(df[index])


def measure(con: Connection, world: dict[str, Any], runs: int) -> list[tuple[str, float, float]]:
    ids = world["ids"]
    mid_day = ids[len(ids) // 2][:9]
    day_start = con.execute("SELECT min(created_at) FROM interactions WHERE id >= ?",
                            [mid_day]).fetchall()[0][0]
    deep_cursor = list_review_items(con, ReviewQuery(review="pending"), limit=1000)[1]

    def page(query: ReviewQuery, cursor: str | None = None) -> Callable[[], Any]:
        return lambda: list_review_items(con, query, limit=50, cursor=cursor)

    rare, rare_df = term_with_df(world, 20)
    medium, medium_df = term_with_df(world, 3000)
    common, common_df = term_with_df(world, 150_000)
    F = InteractionFilter
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("queue: review=pending (the queue page's list call)",
         page(ReviewQuery(review="pending"))),
        ("queue: next page after 1,000 items (cursor)",
         page(ReviewQuery(review="pending"), deep_cursor)),
        ("list: no filter", page(ReviewQuery())),
        ("filter: review=approved", page(ReviewQuery(review="approved"))),
        ("filter: review=rejected", page(ReviewQuery(review="rejected"))),
        ("filter: review=needs_work", page(ReviewQuery(review="needs_work"))),
        ("filter: model", page(ReviewQuery(base=F(model="support-bot")))),
        ("filter: model + review=pending",
         page(ReviewQuery(review="pending", base=F(model="support-bot")))),
        ("filter: tag (logged)", page(ReviewQuery(tag="billing"))),
        ("filter: tag (added by reviewers)", page(ReviewQuery(tag="golden"))),
        ("filter: user", page(ReviewQuery(base=F(user="user-4242")))),
        ("filter: session", page(ReviewQuery(base=F(session="s-4242")))),
        ("filter: since/until (one day)",
         page(ReviewQuery(base=F(since=day_start, until=day_start + timedelta(days=1))))),
        ("filter: has_error=true", page(ReviewQuery(base=F(has_error=True)))),
        ("filter: status_code=500", page(ReviewQuery(base=F(status_code=500)))),
        ("filter: min_score=0.5", page(ReviewQuery(min_score=0.5))),
        (f"search q: rare word (in {rare_df:,})", page(ReviewQuery(q=rare))),
        (f"search q: medium word (in {medium_df:,})", page(ReviewQuery(q=medium))),
        (f"search q: common word (in {common_df:,})", page(ReviewQuery(q=common))),
        ("search q: two words (medium + common)", page(ReviewQuery(q=f"{medium} {common}"))),
        ("search q: common word + review=pending",
         page(ReviewQuery(q=common, review="pending"))),
        ("search q: rare word + model", page(ReviewQuery(q=rare, base=F(model="gpt-4o")))),
        ("search q: common word, answers only (q_in=answers)",
         page(ReviewQuery(q=common, q_in="answers"))),
        ("search q: medium word, answers only (q_in=answers)",
         page(ReviewQuery(q=medium, q_in="answers"))),
        ("search q: common word, with system prompts (q_in=all)",
         page(ReviewQuery(q=common, q_in="all"))),
        ("search q: a word of every system prompt (none elsewhere)",
         page(ReviewQuery(q="support"))),
        (f"search q: prefix {medium[:3]}*", page(ReviewQuery(q=f"{medium[:3]}*"))),
        (f"search q: prefix {medium[:4]}* + common word",
         page(ReviewQuery(q=f"{medium[:4]}* {common}"))),
        ("search q: Japanese/Chinese word, most common (bigrams)",
         page(ReviewQuery(q=str(world["cjk"][0])))),
        ("search q: Japanese/Chinese word, rank 50", page(ReviewQuery(q=str(world["cjk"][50])))),
        ("search q: Japanese/Chinese word, rank 2000",
         page(ReviewQuery(q=str(world["cjk"][2000])))),
        ("search q: one kanji (unigram)", page(ReviewQuery(q=str(world["cjk"][50])[0]))),
        ("item with history (GET /admin/interactions/{id})",
         lambda: review_item(con, world["history_item"])),
    ]
    results = []
    for label, fn in cases:
        p50, p99 = timed(fn, runs)
        results.append((label, p50, p99))
        print(f"  {label:<55} {p50:8.1f} {p99:8.1f}", file=sys.stderr)
    try:
        p50, p99 = timed(lambda: review_stats(con), max(3, runs // 4))
        results.append(("stats (GET /admin/stats)", p50, p99))
    except DATABASE_ERRORS as exc:  # a query this store can't run yet: say so, time the rest
        print(f"  stats (GET /admin/stats) FAILED: {str(exc).splitlines()[0]}", file=sys.stderr)
    baseline = lambda: con.execute(  # noqa: E731
        "SELECT id FROM interactions WHERE request::VARCHAR ILIKE ? OR response::VARCHAR "
        "ILIKE ? ORDER BY id DESC LIMIT 51", [f"%{medium}%", f"%{medium}%"]).fetchall()
    p50, p99 = timed(baseline, 3)
    results.append((f"baseline: leading-wildcard ILIKE '%{medium}%'", p50, p99))
    return results


def measure_ui(db_path: Path, runs: int) -> tuple[str, float, float]:
    """Serve the file with the real proxy and render the Queue page with AppTest."""
    from bench.ui_render import queue_page_render_ms

    p50, p99 = queue_page_render_ms(db_path, runs)
    return "UI: queue page render (AppTest, real proxy)", p50, p99


def open_bench_store(spec: str, workdir: Path) -> tuple[Connection, bool, str]:
    """The connection to time on, migrated; whether the store is empty (to seed); what to
    call it. A Postgres URL is a database the user started (this bench starts no server)."""
    if is_postgres_url(spec):
        raw = psycopg.connect(spec, autocommit=True, options="-c timezone=UTC",
                              application_name="tuneloop-bench")
        json_as_text(raw)  # as the store's pool configures its connections
        migrate(PgConnection(raw, ddl=True))
        con: Connection = PgConnection(raw)
        fresh = con.execute("SELECT count(*) FROM interactions").fetchall()[0][0] == 0
        return con, fresh, "Postgres"
    path = Path(spec) if spec else workdir / "bench.duckdb"
    fresh = not path.exists()
    duck = connect(path)
    migrate(duck)
    return duck, fresh, "DuckDB"


def store_size(con: Connection, spec: str) -> str:
    if is_postgres(con):
        size = con.execute("SELECT pg_database_size(current_database())").fetchall()[0][0]
        return f"database {size / 1e9:.2f} GB"
    return f"file {Path(spec).stat().st_size / 1e9:.2f} GB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--db", default=None,
                        help="keep the seeded DuckDB file here (reused when it exists), or "
                             "a postgresql:// URL of a database to seed (reused when seeded)")
    parser.add_argument("--ui", action="store_true", help="also time the queue page render")
    args = parser.parse_args()
    if args.ui and args.db and is_postgres_url(args.db):
        parser.error("--ui serves a DuckDB file; leave it out with a Postgres URL")
    rng = np.random.default_rng(42)
    workdir = tempfile.TemporaryDirectory(prefix="tuneloop-bench-")
    spec = args.db or str(Path(workdir.name) / "bench.duckdb")
    con, fresh, backend = open_bench_store(spec, Path(workdir.name))
    world = seed(con, args.rows, rng) if fresh else _reload(con, args.rows, rng)
    if fresh:
        seed_reviews(con, world, rng)
        # DuckDB: write the file out; Postgres: statistics and the visibility map (what
        # autovacuum would do after a bulk load) so index-only scans are index-only
        con.execute("VACUUM ANALYZE" if is_postgres(con) else "CHECKPOINT")
    check_index(con, world, rng)
    counts = con.execute("SELECT (SELECT count(*) FROM interactions), "
                         "(SELECT count(*) FROM search_terms), (SELECT count(*) FROM reviews)"
                         ).fetchall()[0]
    print(f"\n{backend}: {counts[0]:,} interactions, {counts[1]:,} term-index rows, "
          f"{counts[2]:,} reviewed; seeded in {world.get('seconds', 0):.0f} s; "
          f"{store_size(con, spec)}; {runs_note(args.runs)}\n")
    results = measure(con, world, args.runs)
    con.close()
    if args.ui:
        results.append(measure_ui(Path(spec), max(5, args.runs // 3)))
    baseline = next(p50 for label, p50, _ in results if label.startswith("baseline"))
    width = max(len(label) for label, _, _ in results)
    print(f"{backend}: {'query':<{width - len(backend) - 2}}  {'p50 ms':>8}  {'p99 ms':>8}  "
          f"{'p50 / ILIKE':>11}")
    print("-" * (width + 33))
    for label, p50, p99 in results:
        print(f"{label:<{width}}  {p50:8.1f}  {p99:8.1f}  {p50 / baseline:11.3f}")
    workdir.cleanup()


def runs_note(runs: int) -> str:
    return f"{runs} timed runs per query after one warm-up"


def _reload(con: Connection, rows: int, rng: np.random.Generator) -> dict[str, Any]:
    """Rebuild the bench's view of a file seeded earlier (ids, document frequencies)."""
    ids = np.array([r[0] for r in con.execute("SELECT id FROM interactions ORDER BY id")
                    .fetchall()])
    embeddings = np.array([r[0] == "embeddings" for r in con.execute(
        "SELECT endpoint FROM interactions ORDER BY id").fetchall()])
    vocab = vocabulary(rng, VOCABULARY)  # the same draws as the seeding's: same words
    cjk = cjk_vocabulary(rng, CJK_VOCABULARY)
    frequency = dict(con.execute("SELECT term_key, count(*) FROM search_terms GROUP BY 1")
                     .fetchall())
    history = con.execute("SELECT interaction_id FROM review_revisions WHERE action = 'undo' "
                          "LIMIT 1").fetchall()[0][0]
    return {"ids": ids, "embeddings": embeddings, "vocab": vocab, "cjk": cjk,
            "df": np.array([frequency.get(term_key(t), 0) for t in stems(vocab.tolist())]),
            "history_item": history}


if __name__ == "__main__":
    main()
