"""The shape of one interaction record as spooled and ingested, and its batch insert."""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from storage.backend import CONSTRAINT_ERRORS, staged
from storage.backend.dialect import table_exists
from storage.backend.pg_connection import CopyInput, PgConnection
from storage.backend.pg_copy import text_for_copy
from storage.backend.pg_copy_binary import binary_for_copy
from storage.db import Connection
from storage.trainable import logged_untrainable, mark_untrainable_batch

log = logging.getLogger("tuneloop.ingest")

# The spool stores one JSON object per line with these keys; JSON columns hold JSON text and
# created_at holds microseconds since the epoch (UTC).
INTERACTION_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("endpoint", pa.string()),
        ("model", pa.string()),
        ("upstream_model", pa.string()),
        ("provider", pa.string()),
        ("route", pa.string()),
        ("traffic", pa.string()),
        ("request", pa.string()),
        ("response", pa.string()),
        ("status_code", pa.int32()),
        ("finish", pa.string()),
        ("error", pa.string()),
        ("latency_ms", pa.float64()),
        ("ttfb_ms", pa.float64()),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("cost_usd", pa.float64()),
        ("stream", pa.bool_()),
        ("tags", pa.list_(pa.string())),
        ("user_id", pa.string()),
        ("session_id", pa.string()),
        ("metadata", pa.string()),
        ("usage_estimated", pa.bool_()),
        ("source_id", pa.string()),
        ("sent_request", pa.string()),
    ]
)
COLUMNS: tuple[str, ...] = tuple(INTERACTION_SCHEMA.names)
JSON_COLUMNS = ("route", "request", "response", "metadata", "sent_request")
_COLUMN_SET = frozenset(COLUMNS)
CLIENT_KEY = "client_key"
"""A record's field that is no column of `interactions`: which client key sent the request (a
digest, proxy/exchange.py `client_key`), listed with the row for the search indexer's lanes
(`search_pending.client_key`, storage.search_fair). Absent from a record spooled by an older
version: NULL."""
RECORD_SCHEMA = INTERACTION_SCHEMA.append(pa.field(CLIENT_KEY, pa.string()))
"""A spooled record's fields: the interaction's columns and CLIENT_KEY (batches carry it until
the interactions are inserted without it)."""
_FIELD_SET = frozenset(RECORD_SCHEMA.names)


def encode_record(record: dict[str, Any]) -> bytes:
    """One spool line. Unknown keys are an error in our code, not in the client's input."""
    unknown = record.keys() - _FIELD_SET
    if unknown:
        raise ValueError(f"unknown interaction fields: {sorted(unknown)}")
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def parse_lines(data: bytes, source: str) -> list[dict[str, Any]]:
    """Parse a spool segment. A torn last line (crash mid-write) or a corrupt line is skipped
    and reported; every complete record is kept."""
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.error("spool %s line %d is not valid JSON; skipped (%d bytes)", source, number,
                      len(line))
            continue
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            log.error("spool %s line %d is not an interaction record; skipped", source, number)
            continue
        rows.append(row)
    return rows


_READ_SCHEMA = pa.schema(
    [pa.field("created_at", pa.int64()) if f.name == "created_at" else f
     for f in RECORD_SCHEMA]
)


def arrow_from_segment(data: bytes) -> pa.Table | None:
    """Parse a whole spool segment in Arrow's C++ JSON reader (fast, and it releases the GIL,
    so ingest doesn't slow the request path). None when it can't (a torn or corrupt line):
    the caller then takes the line-by-line path."""
    if not data.strip():
        return to_arrow([])
    try:
        table = pa_json.read_json(
            io.BytesIO(data),
            read_options=pa_json.ReadOptions(block_size=max(len(data) + 1, 1 << 20)),
            parse_options=pa_json.ParseOptions(explicit_schema=_READ_SCHEMA,
                                               unexpected_field_behavior="error"),
        )
        created = pc.cast(table["created_at"], pa.timestamp("us", tz="UTC"))
        table = table.set_column(table.schema.get_field_index("created_at"), "created_at",
                                 created)
        return table.select(RECORD_SCHEMA.names).cast(RECORD_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError):
        return None


def to_arrow(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Records as a batch (RECORD_SCHEMA), the first of each id."""
    unique: dict[str, dict[str, Any]] = {}
    for row in rows:
        unique.setdefault(row["id"], row)
    columns = {name: [row.get(name) for row in unique.values()] for name in RECORD_SCHEMA.names}
    return pa.table(columns, schema=RECORD_SCHEMA)


def stored_columns(table: pa.Table) -> pa.Table:
    """A batch's columns of `interactions` (without the record's CLIENT_KEY)."""
    if CLIENT_KEY not in table.column_names:
        return table
    return table.drop_columns([CLIENT_KEY])


def forgotten_user_key(name: str) -> str:
    """How `forgotten_users` (storage/migrations/m040) names a user: never the name itself."""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()


def user_keys(table: pa.Table) -> dict[str, str]:
    """The users of a batch by their `forgotten_users` key (`forgotten_user_key`)."""
    users = [u for u in pc.unique(table["user_id"]).to_pylist() if u is not None]
    return {forgotten_user_key(u): u for u in users}


def _forgotten_removed(con: Connection, table: pa.Table,
                       names: dict[str, str] | None = None) -> pa.Table:
    """The batch without the rows of users erased by `forget` after the row was made (a row
    of theirs that waited in a spool, this replica's or another's, while `forget` ran).
    `names`: the batch's `user_keys`, when computed beforehand."""
    names = user_keys(table) if names is None else names
    if not names or not table_exists(con, "forgotten_users"):
        return table
    # the keys as one comma-separated text (hex digests): a list of hundreds of values took
    # the driver a millisecond and more per batch to send, under the write lock
    rows = con.execute("SELECT user_sha256, forgotten_at FROM forgotten_users "
                       "WHERE user_sha256 = ANY(string_to_array(?, ','))",
                       [",".join(names)]).fetchall()
    if not rows:
        return table
    until = {names[digest]: at for digest, at in rows}
    keep = [user not in until or created > until[user] for user, created in
            zip(table["user_id"].to_pylist(), table["created_at"].to_pylist(), strict=True)]
    return table.filter(pa.array(keep, pa.bool_()))


@dataclass(frozen=True)
class PreparedBatch:
    """A batch with what its insert needs computed beforehand, off the write transaction
    (the writer prepares the next batch while the database takes this one)."""
    table: pa.Table
    untrainable: tuple[list[str], list[str]]
    copy_data: CopyInput = None
    """Postgres COPY input of `table`: COPY's binary format where every column has a type
    it is written for, else its text format (None: made at insert)."""
    users: dict[str, str] | None = None
    """`user_keys(table)` (None: computed at insert)."""


def prepare_batch(table: pa.Table, *, for_postgres: bool) -> PreparedBatch:
    copy_data: CopyInput = None
    if for_postgres:
        stored = stored_columns(table)
        copy_data = binary_for_copy(stored) or text_for_copy(stored)
    return PreparedBatch(table, logged_untrainable(table), copy_data, user_keys(table))


def _copy_interactions(con: PgConnection, table: pa.Table, data: CopyInput) -> bool:
    """Postgres: COPY the batch straight into the table (one pass over the data, instead of
    COPY into a temporary table and INSERT ... SELECT from it), in a savepoint. False when an
    id is already there (a replayed spool segment): the caller then takes the path that
    skips those."""
    con.execute("BEGIN")
    try:
        con.copy_rows("interactions", table, data)
    except CONSTRAINT_ERRORS:
        con.execute("ROLLBACK")
        return False
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
    return True


def _insert_new(con: Connection, table: pa.Table, data: CopyInput) -> pa.Table:
    """Insert the rows whose id is not there yet (their columns of `interactions`); the rows
    inserted (all of `table`'s columns)."""
    stored = stored_columns(table)
    if isinstance(con, PgConnection) and _copy_interactions(con, stored, data):
        return table
    columns = ", ".join(stored.schema.names)
    with staged(con, "_ingest_batch", stored, like="interactions"):
        inserted = con.execute(
            f"INSERT INTO interactions ({columns}) SELECT {columns} FROM _ingest_batch "
            "ON CONFLICT DO NOTHING RETURNING id").fetchall()
    if len(inserted) == table.num_rows:
        return table
    return table.filter(pc.is_in(table["id"], value_set=pa.array([r[0] for r in inserted],
                                                                 pa.string())))


def insert_interactions(con: Connection, table: pa.Table | PreparedBatch, *,
                        then: Callable[[Connection, pa.Table], None] | None = None) -> int:
    """Insert a batch, ignoring ids already present (spool replay is idempotent), and list
    its answerless rows for the review queue (`storage.trainable`, the rule computed in
    Python, not by reading the JSON back). `then` gets the rows actually inserted, in the
    same transaction (the writer lists them for the search indexer)."""
    prepared = table if isinstance(table, PreparedBatch) else None
    rows = _forgotten_removed(con, prepared.table, prepared.users) if prepared else \
        _forgotten_removed(con, table)
    if rows.num_rows == 0:
        return 0
    if prepared is None or rows.num_rows < prepared.table.num_rows:
        prepared = prepare_batch(rows, for_postgres=False)
    inserted = _insert_new(con, rows, prepared.copy_data)
    ids, reasons = prepared.untrainable
    if inserted.num_rows < rows.num_rows:  # a replay: only the rows new here
        kept = set(inserted["id"].to_pylist())
        pairs = [(i, r) for i, r in zip(ids, reasons, strict=True) if i in kept]
        ids, reasons = [i for i, _ in pairs], [r for _, r in pairs]
    mark_untrainable_batch(con, ids, reasons)  # the review queue's list of answerless rows
    if then is not None and inserted.num_rows:
        then(con, inserted)
    return inserted.num_rows
