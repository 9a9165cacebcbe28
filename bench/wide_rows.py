"""One key's wide requests against the search indexer (review r12x3 MED 2): indexer seconds per
wide row, index bytes per row, and how long the other keys' rows listed after them wait to be
indexed, on main and on this tree side by side, DuckDB and Postgres.

WIDE rows of client key `flood`, each field (system, user, answer) of 5,200 random new words
(~135 KB a row, past MAX_FIELD_TERMS), are listed for the indexer, then OTHER ordinary rows of
key `other`; one background indexer call (storage.search_queue) indexes them all. The rows are
requests to a plain model (no route: the key is only in the spooled record, `client_key`, as
the proxy spools every record since migration 55), or with `--routed` to an alias (the key in
`route.client_key` too). `wide before` counts the wide rows indexed by the write that indexed
the last of the others. Each tree runs in a child process (PYTHONPATH on it); the baseline tree
is `git archive <--baseline-ref>` of this repository unpacked in a temporary directory.
Bounded: about a minute on 2 cores.

    python bench/wide_rows.py [--wide 20] [--other 50] [--routed] [--baseline-ref main]
                              [--stores duckdb,pg]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import string
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

INDEX_TABLES = ("search_docs", "search_terms", "search_words")


def words(rng: random.Random, n: int) -> str:
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=8)) for _ in range(n))


def row(k: int, key: str, routed: bool, system: str, user: str, answer: str) -> dict[str, Any]:
    import orjson

    return {"id": f"{0x01900000 + k:08x}-0000-7000-8000-000000000000",
            "created_at": 1_700_000_000_000_000 + k, "endpoint": "chat.completions",
            "model": "m", "traffic": "production", "status_code": 200, "tags": [],
            "route": orjson.dumps({"client_key": key}).decode() if routed else None,
            "client_key": key,  # a tree before migration 55 leaves it out (storage.records)
            "request": orjson.dumps({"messages": [{"role": "system", "content": system},
                                                  {"role": "user", "content": user}]}).decode(),
            "response": orjson.dumps({"choices": [{"index": 0, "message": {
                "role": "assistant", "content": answer}}]}).decode()}


def index_bytes(con: Any, pg: bool) -> int:
    if pg:
        return int(sum(con.execute(f"SELECT pg_total_relation_size('{t}')").fetchall()[0][0]
                       for t in INDEX_TABLES))
    con.execute("CHECKPOINT")
    # DuckDB: the blocks its tables use (storage_info: per column segment, before compression
    # counted by the block it sits in)
    return int(sum(con.execute(
        f"SELECT count(DISTINCT block_id) FROM pragma_storage_info('{t}') "
        "WHERE persistent").fetchall()[0][0] for t in INDEX_TABLES)) * 262_144


def child(store: str, n_wide: int, n_other: int, routed: bool) -> dict[str, Any]:
    """Run in the tree on PYTHONPATH: the figures of one store."""
    from storage.records import insert_interactions, to_arrow
    from storage.search_index import SearchIndexer, queue_for_index
    from storage.search_queue import BackgroundIndexer
    from storage.store import migrate_store, open_store

    rng = random.Random(11)
    wide = [row(k, "flood", routed, *(words(rng, 5200) for _ in range(3)))
            for k in range(n_wide)]
    other = [row(1000 + k, "other", routed, "You are a support bot.", f"where is order {k}",
                 "shipped") for k in range(n_other)]
    cluster = None
    if store == "pg":
        sys.path.insert(0, str(ROOT))
        from tests.pg_cluster import PgCluster

        cluster = PgCluster.start()
        spec = cluster.create_database()
    else:
        spec = str(Path(tempfile.mkdtemp()) / "wide.duckdb")
    db = open_store(spec)
    try:
        migrate_store(db)
        for rows in (wide, other):
            db.write_sync(lambda con, rows=rows: insert_interactions(
                con, to_arrow(rows), then=queue_for_index))
        before = db.read_sync(lambda con: index_bytes(con, store == "pg")) \
            if store == "pg" else db.write_sync(lambda con: index_bytes(con, False))
        other_ids = [r["id"] for r in other]
        wide_ids = [r["id"] for r in wide]
        write = db.write
        start = time.perf_counter()
        waited: list[float] = []
        wide_before: list[int] = []

        def indexed(ids: list[str]) -> int:
            return int(db.read_sync(lambda con: con.execute(
                "SELECT count(*) FROM search_docs WHERE interaction_id = "
                "ANY(?::VARCHAR[])", [ids]).fetchall()[0][0]))

        async def timed(fn: Any) -> Any:
            result = await write(fn)
            if not waited and indexed(other_ids) == len(other_ids):
                waited.append(time.perf_counter() - start)
                wide_before.append(indexed(wide_ids))
            return result

        db.write = timed  # type: ignore[method-assign]
        taken = asyncio.run(BackgroundIndexer(db, SearchIndexer(None)).index_pending())
        elapsed = time.perf_counter() - start
        db.write = write  # type: ignore[method-assign]
        after = db.read_sync(lambda con: index_bytes(con, True)) if store == "pg" \
            else db.write_sync(lambda con: index_bytes(con, False))
        rows_per = db.read_sync(lambda con: con.execute(
            "SELECT (SELECT count(*) FROM search_terms) + (SELECT count(*) FROM search_words)"
            ).fetchall()[0][0]) / max(1, n_wide)
        sent = sum(len(r["request"]) + len(r["response"]) for r in wide) / n_wide
        assert taken == n_wide + n_other, taken
        return {"s_per_wide": elapsed / n_wide, "bytes_per_wide": (after - before) / n_wide,
                "rows_per_wide": rows_per, "sent": sent, "other_wait_s": waited[0],
                "wide_before": wide_before[0], "total_s": elapsed}
    finally:
        db.close()
        if cluster is not None:
            cluster.stop()


def run_tree(tree: Path, store: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", store,
                          "--wide", str(args.wide), "--other", str(args.other),
                          *(["--routed"] if args.routed else [])], env=env,
                         cwd=tree, capture_output=True, text=True, timeout=600, check=False)
    if out.returncode:
        raise SystemExit(f"{tree} {store}: {out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wide", type=int, default=20)
    parser.add_argument("--other", type=int, default=50)
    parser.add_argument("--routed", action="store_true",
                        help="requests to a route alias (the key in route.client_key too)")
    parser.add_argument("--baseline-ref", default="main")
    parser.add_argument("--stores", default="duckdb,pg")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.wide, args.other, args.routed)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "base.tar"
        subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive),
                        args.baseline_ref], check=True)
        base = Path(tmp) / "base"
        with tarfile.open(archive) as tar:
            tar.extractall(base, filter="data")
        print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
              f"{args.wide} wide rows of key flood, then {args.other} of key other, "
              f"{'routed (an alias)' if args.routed else 'un-routed (a plain model)'}")
        print(f"{'store':<7} {'tree':<9} {'s/wide row':>10} {'index KB/row':>12} "
              f"{'index rows/row':>14} {'x sent':>6} {'others wait s':>13} "
              f"{'wide before':>11} {'total s':>8}")
        for store in args.stores.split(","):
            figures = {name: run_tree(tree, store, args)
                       for name, tree in ((args.baseline_ref, base), ("this", ROOT))}
            for name, f in figures.items():
                print(f"{store:<7} {name:<9} {f['s_per_wide']:>10.3f} "
                      f"{f['bytes_per_wide'] / 1024:>12,.0f} {f['rows_per_wide']:>14,.0f} "
                      f"{f['bytes_per_wide'] / f['sent']:>6.1f} {f['other_wait_s']:>13.2f} "
                      f"{f['wide_before']:>11} {f['total_s']:>8.1f}", flush=True)
            base_f, this_f = figures[args.baseline_ref], figures["this"]
            print(f"{store:<7} {'ratio':<9} {this_f['s_per_wide'] / base_f['s_per_wide']:>10.2f} "
                  f"{this_f['bytes_per_wide'] / base_f['bytes_per_wide']:>12.2f} "
                  f"{this_f['rows_per_wide'] / base_f['rows_per_wide']:>14.2f} {'':>6} "
                  f"{this_f['other_wait_s'] / base_f['other_wait_s']:>13.2f} "
                  f"{this_f['wide_before'] / max(1, base_f['wide_before']):>11.2f}")
        print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
