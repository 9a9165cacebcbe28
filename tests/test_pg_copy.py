"""Rows COPYed into Postgres in COPY's binary format (storage.backend.pg_copy_binary) and in
its text format (storage.backend.pg_copy) read back exactly as they went in: every character
the text format escapes (backslash, tab, newline, carriage return, the `\\.` end marker, the
`\\N` NULL marker), empty text next to NULL, arrays with NULL and empty elements, quotes,
backslashes, commas and braces, CJK and emoji, numbers at their edges; binary input for a
table whose columns have other types goes in as text."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pytest

from storage.backend.pg_copy import text_for_copy
from storage.backend.pg_copy_binary import BinaryCopy, binary_for_copy
from storage.backend.pg_database import PgDatabase
from storage.records import (
    COLUMNS,
    PreparedBatch,
    insert_interactions,
    prepare_batch,
    stored_columns,
    to_arrow,
)
from storage.store import migrate_store

HOSTILE_TEXTS = [
    "back\\slash", "tab\there", "new\nline", "carriage\rreturn", "\\.", "\\N", "N", "",
    "end\\", "\\\\n", "\\t literally", "漢字とかな", "emoji 🎉", "quote \" and , comma",
    "line\n\\.\nafter the end marker", "{braces}", "NULL",
]


def _row(n: int, text: str | None, tags: list[str | None] | None) -> dict[str, Any]:
    request = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": text}]})
    response = orjson.dumps({"choices": [{"message": {"role": "assistant",
                                                      "content": text}}]})
    return {
        "id": f"row-{n}", "created_at": 1_764_460_800_123_456 + n,
        "endpoint": "chat.completions", "model": text, "upstream_model": None,
        "provider": "openai", "route": orjson.dumps({"alias": text}).decode(),
        "traffic": "production", "request": request.decode(), "response": response.decode(),
        "status_code": 200, "finish": "stop", "error": text,
        "latency_ms": [0.1 + 0.2, 1e-300, 1.7976931348623157e308, -0.0][n % 4],
        "ttfb_ms": None, "prompt_tokens": -2_147_483_648 if n == 1 else n,
        "completion_tokens": 2_147_483_647, "cost_usd": 0.00021, "stream": n % 2 == 0,
        "tags": tags, "user_id": text, "session_id": None,
        "metadata": orjson.dumps({"k": text}).decode(), "usage_estimated": None,
        "source_id": "", "sent_request": None,
    }


def _rows() -> list[dict[str, Any]]:
    rows = [_row(n, text, [text, "plain"]) for n, text in enumerate(HOSTILE_TEXTS)]
    rows.append(_row(len(rows), None, None))
    rows.append(_row(len(rows), "x", []))
    rows.append(_row(len(rows), "y", [None, "", "a\"b\\c,d{e}", "NULL"]))
    return rows


def _stored(db: PgDatabase) -> dict[str, dict[str, Any]]:
    names = ", ".join(COLUMNS)
    rows = db.read_sync(lambda con: con.execute(
        f"SELECT {names} FROM interactions ORDER BY id").fetchall())
    return {row[0]: dict(zip(COLUMNS, row, strict=True)) for row in rows}


def _prepared(rows: list[dict[str, Any]], copy_format: str) -> PreparedBatch:
    batch = prepare_batch(to_arrow(rows), for_postgres=True)
    assert isinstance(batch.copy_data, BinaryCopy)  # the writer's batches: binary
    if copy_format == "text":
        batch = dataclasses.replace(batch, copy_data=text_for_copy(stored_columns(batch.table)))
    return batch


def test_the_text_format_escapes_what_it_must() -> None:
    table = pa.table({"t": ["a\\b\tc\nd\re", None, ""], "n": [1, None, 3],
                      "l": [["q\"", "b\\", None], None, []]})
    assert text_for_copy(table) == (b'a\\\\b\\tc\\nd\\re\t1\t{"q\\\\"","b\\\\\\\\",NULL}\n'
                                    b"\\N\t\\N\t\\N\n"
                                    b"\t3\t{}\n")
    assert text_for_copy(table.slice(1, 1)) == b"\\N\t\\N\t\\N\n"  # a slice: its own rows
    assert text_for_copy(table.slice(0, 0)) == b""


@pytest.mark.parametrize("copy_format", ["binary", "text"])
def test_hostile_rows_read_back_exactly_as_they_went_in(pg_url: str, copy_format: str) -> None:
    db = PgDatabase(pg_url, read_threads=1)
    try:
        migrate_store(db)
        rows = _rows()
        batch = _prepared(rows, copy_format)
        assert db.write_sync(lambda con: insert_interactions(con, batch)) == len(rows)
        stored = _stored(db)
        assert sorted(stored) == sorted(r["id"] for r in rows)
        for row in rows:
            got = stored[row["id"]]
            for name in COLUMNS:
                want = row[name]
                if name == "created_at":
                    seconds, micros = divmod(want, 1_000_000)
                    want = datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
                if isinstance(want, float):
                    assert math.copysign(1, got[name]) == math.copysign(1, want), name
                assert got[name] == want, (row["id"], name, got[name], want)
        # the JSON columns are JSON to Postgres' own operators, escapes undone
        answers = db.read_sync(lambda con: con.execute(
            "SELECT id, response -> 'choices' -> 0 -> 'message' ->> 'content', "
            "request -> 'messages' -> 0 ->> 'content' FROM interactions").fetchall())
        by_id = {row["id"]: row for row in rows}
        for id_, answer, question in answers:
            assert answer == question == by_id[id_]["error"], id_
    finally:
        db.close()


@pytest.mark.parametrize("copy_format", ["binary", "text"])
@pytest.mark.parametrize("bad", [{"error": "nul \x00 inside"}, {"metadata": '{"not": json'}])
def test_a_value_postgres_refuses_fails_the_copy(pg_url: str, bad: dict[str, str],
                                                  copy_format: str) -> None:
    """A NUL character (Postgres' text can't hold one), text that is not JSON in a JSON
    column: the COPY fails with a DataError (the writer then isolates the row), nothing half
    in."""
    import psycopg

    db = PgDatabase(pg_url, read_threads=1)
    try:
        migrate_store(db)
        batch = _prepared([_row(1, "fine", None), _row(0, "fine", None) | bad], copy_format)
        with pytest.raises(psycopg.errors.DataError):
            db.write_sync(lambda con: insert_interactions(con, batch))
        assert _stored(db) == {}
    finally:
        db.close()


def test_binary_input_for_other_column_types_goes_in_as_text(pg_url: str) -> None:
    """A table whose columns have other types than the binary input was written for (bigint
    for int32, text[] for a varchar array, jsonb): the rows go in as text, exactly."""
    table = pa.table({"id": ["a", "b"], "n": pa.array([7, None], pa.int32()),
                      "tags": [["x", None], []], "doc": ['{"k": [1, 2]}', None]})
    data = binary_for_copy(table)
    assert data is not None
    db = PgDatabase(pg_url, read_threads=1)
    try:
        kinds = (("INTEGER", "VARCHAR[]", "JSON"), ("BIGINT", "VARCHAR[]", "JSON"),
                 ("INTEGER", "TEXT[]", "JSON"), ("INTEGER", "VARCHAR[]", "JSONB"))
        for number, (n, tags, doc) in enumerate(kinds):
            name = f"t{number}"

            def copy(con: Any, name: str = name, n: str = n, tags: str = tags,
                     doc: str = doc, fits: bool = number == 0) -> list[Any]:
                con.execute(f"CREATE TABLE {name} (id VARCHAR, n {n}, tags {tags}, doc {doc})")
                assert data.fits(con._types_of(name)) is fits
                assert con.copy_rows(name, table, data) == 2
                return con.execute(f"SELECT id, n, tags, doc::text FROM {name} ORDER BY id"
                                   ).fetchall()
            got = db.write_sync(copy)
            want_doc = '{"k": [1, 2]}'
            assert got == [("a", 7, ["x", None], want_doc), ("b", None, [], None)], (n, tags, doc)
    finally:
        db.close()


def test_long_text_is_lz4_compressed_in_every_copy_of_a_transaction(pg_url: str) -> None:
    """lz4 is SET LOCAL once per transaction: a savepoint rolled back undoes it (the next COPY
    sets it again), a savepoint released keeps it, a new transaction sets it again."""
    long = "refund policy customer order " * 400  # compressible, past the TOAST threshold
    db = PgDatabase(pg_url, read_threads=1)
    try:
        db.write_sync(lambda con: con.execute("CREATE TABLE t (id VARCHAR, body TEXT)"))

        def copy(con: Any, id_: str) -> None:
            con.copy_rows("t", pa.table({"id": [id_], "body": [long]}))

        def steps(con: Any) -> None:
            con.execute("BEGIN")
            copy(con, "in a savepoint rolled back")
            con.execute("ROLLBACK")
            copy(con, "after the rollback")
            con.execute("BEGIN")
            copy(con, "in a savepoint released")
            con.execute("COMMIT")
            con.execute("BEGIN")
            con.execute("BEGIN")
            con.execute("ROLLBACK")
            copy(con, "after an inner rollback")
            con.execute("COMMIT")
            copy(con, "after the release")
        db.write_sync(steps)
        db.write_sync(lambda con: copy(con, "next transaction"))
        got = dict(db.read_sync(lambda con: con.execute(
            "SELECT id, pg_column_compression(body) FROM t").fetchall()))
        assert got == dict.fromkeys(["after the rollback", "in a savepoint released",
                                     "after an inner rollback", "after the release",
                                     "next transaction"], "lz4")
    finally:
        db.close()
