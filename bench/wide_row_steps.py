"""Where indexing a wide row goes (review r12x3 MED 2): per step, ms a row, DuckDB and Postgres.

ROWS interactions, each field (system, user, answer) of 5,000 random new words (the caps of
MAX_FIELD_TERMS exactly), are tokenized one at a time (parse, `terms`, `forward_index`), then
written one transaction a row as `store_forward_index` writes them, each table timed alone;
then the bytes a row takes per table and index (Postgres). Fresh, small tables: on a big
database each random new key costs more (the review measured ~3 s a row at that cap).

    PYTHONPATH=$PWD python bench/wide_row_steps.py [--rows 30] [--stores duckdb,pg]
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests.pg_cluster; PYTHONPATH first

from storage.backend.pg_connection import PgConnection
from storage.records import insert_interactions, to_arrow
from storage.search_index import (
    TERMS_SCHEMA,
    _fields,
    _insert,
    forward_index,
)
from storage.search_text import terms
from storage.store import migrate_store, open_store


def make_row(rng: random.Random, k: int) -> dict[str, Any]:
    def text() -> str:
        return " ".join("".join(rng.choices(string.ascii_lowercase, k=8)) for _ in range(5000))

    return {"id": f"{0x01900000 + k:08x}-0000-7000-8000-000000000000",
            "created_at": 1_700_000_000_000_000 + k, "endpoint": "chat.completions",
            "model": "m", "traffic": "production", "status_code": 200, "tags": [],
            "request": orjson.dumps({"messages": [{"role": "system", "content": text()},
                                                  {"role": "user", "content": text()}]}).decode(),
            "response": orjson.dumps({"choices": [{"index": 0, "message": {
                "role": "assistant", "content": text()}}]}).decode()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--stores", default="duckdb,pg")
    args = parser.parse_args()
    rng = random.Random(5)
    rows = [make_row(rng, k) for k in range(args.rows)]
    times: dict[str, float] = {}

    def tick(name: str, start: float) -> None:
        times[name] = times.get(name, 0.0) + time.perf_counter() - start

    forwards = []
    for row in rows:
        start = time.perf_counter()
        fields = _fields(row)
        tick("parse JSON, fields", start)
        start = time.perf_counter()
        terms(list(fields))
        tick("tokenize, stem, hash", start)
        start = time.perf_counter()
        forwards.append(forward_index([row["id"]], [fields]))
        tick("forward_index (all of it)", start)
    print(f"{args.rows} rows of {len(rows[0]['request']) / 1024:.0f} KB request; postings "
          f"{len(forwards[0].docs['term_keys'].combine_chunks().flatten()):,}, words "
          f"{forwards[0].words.num_rows:,} a row")
    for name, seconds in times.items():
        print(f"  {name:<28} {seconds / args.rows * 1000:8.1f} ms/row")
    for store in args.stores.split(","):
        cluster = None
        if store == "pg":
            from tests.pg_cluster import PgCluster

            cluster = PgCluster.start()
            spec = cluster.create_database()
        else:
            spec = str(Path(tempfile.mkdtemp()) / "steps.duckdb")
        db = open_store(spec)
        try:
            migrate_store(db)
            db.write_sync(lambda con: insert_interactions(con, to_arrow(rows)))
            times.clear()

            def store_steps(con: Any, forward: Any) -> None:
                docs = forward.docs
                keys = docs["term_keys"].combine_chunks()
                postings = pa.table(
                    [keys.flatten(), docs["interaction_id"].take(pc.list_parent_indices(keys)),
                     docs["term_fields"].combine_chunks().flatten()], schema=TERMS_SCHEMA)
                con.execute("BEGIN")
                for table, rows_of in (("search_docs", docs), ("search_terms", postings),
                                       ("search_words", forward.words)):
                    start = time.perf_counter()
                    if isinstance(con, PgConnection) and table != "search_words":
                        con.copy_rows(table, rows_of)
                    else:
                        _insert(con, table, rows_of)
                    tick(table, start)
                start = time.perf_counter()
                con.execute("COMMIT")
                tick("commit", start)

            for forward in forwards:
                db.write_sync(lambda con, forward=forward: store_steps(con, forward))
            print(store)
            for name, seconds in times.items():
                print(f"  {name:<28} {seconds / args.rows * 1000:8.1f} ms/row")
            if cluster is not None:
                sizes = db.read_sync(lambda con: con.execute(
                    "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                    "WHERE c.relname LIKE 'search_%' AND c.relkind IN ('r', 'i') "
                    "ORDER BY 1").fetchall())
                for name, size in sizes:
                    if size > 16_384:
                        print(f"  {name:<40} {size / args.rows / 1024:8,.0f} KB/row")
        finally:
            db.close()
            if cluster is not None:
                cluster.stop()


if __name__ == "__main__":
    main()
