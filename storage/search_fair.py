"""Fair indexing between client keys: one key's wide rows can't hold back everyone's.

An interaction at the caps (storage.search_forward: 3 x MAX_FIELD_TERMS new terms and
MAX_ROW_WORDS words) costs the indexer hundreds of times an ordinary chat row; with the oldest
rows first, ONE key sending such rows faster than they index made every other key's rows wait
longer and longer to be searchable (review r12x3 MED 2: a backlog of 10k rows grew to 23k in
26 minutes). So the background indexer (storage.search_queue) shares its work between the
client keys of the rows, in passes like a deficit round robin:

1. the light lane: the oldest listed rows of every key not found heavy, a batch at a time;
   a key whose rows written in this pass (postings and words, `KeyShares.charge`) reach its
   quantum, `key_terms`, becomes heavy: its other rows wait (they stay listed);
2. then each heavy key, one quantum of its oldest rows;
3. again from 1, until nothing is listed (or nothing could be taken).

A key stays heavy for the next call of the indexer when it spent a quantum in this one (so
the others' rows go first from that call's first write), and is light again after a call in
which it did not.

So between two looks at the other keys' rows the indexer writes at most a quantum (plus one
write transaction) per heavy key: those rows wait for that, not for a key's whole backlog,
and a key alone is indexed at full speed (quanta back to back). The heavy keys are kept from
one call to the next (in the indexing replica's memory: a new leader finds them again within a
quantum each).

A row's key is the one listed with it at ingest (`search_pending.client_key`, migration 55),
read with its id and size, never from `interactions`: the digest of the credential that was
checked for its request, routed to an alias or not (proxy/exchange.py `client_key`: the
proxy's issued key, or the app's own key when the upstream it went to checks it). Requests
whose credential nobody checks (no key, or one the proxy does not forward), and those whose
key the upstream refused (401/403: made-up keys are no lanes of their own), are one client,
the anonymous one, so one lane; so are the rows listed without a key: before migration 55, by
a replica of an older version during a rolling deploy, or spooled by one (key '').
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from storage.backend.dialect import table_exists
from storage.db import Connection
from storage.search_index import PENDING
from storage.search_tail import batch_ids, read_rows, sized

# a key's quantum: the rows (postings and words) written for its interactions in a pass before
# the other keys' rows are looked at again; about 3 interactions at the caps, or 1,000 chat rows
KEY_TERMS = 50_000
KEY = "coalesce(client_key, '')"


class KeyShares:
    """Which keys are heavy, and what each key had written in the current pass."""

    def __init__(self, quantum: int = KEY_TERMS):
        self.quantum = quantum
        self.heavy: dict[str, None] = {}  # in the order they became heavy
        self.spent: dict[str, int] = {}
        self._reached: set[str] = set()  # the keys that spent a quantum in this call
        self.width: dict[str, float] = {}  # of a key's rows lately (a moving average)

    def new_call(self) -> None:
        self._reached = set()

    def end_call(self) -> None:
        self.heavy = {key: None for key in self.heavy if key in self._reached}

    def new_pass(self) -> None:
        self.spent = {}

    def turn(self, key: str) -> None:
        """A heavy key's quantum in this pass, whatever it wrote in the light lane."""
        self.spent[key] = 0

    def may_write(self, key: str) -> bool:
        return self.spent.get(key, 0) < self.quantum

    def room(self, key: str | None, max_rows: int) -> int:
        """How many rows of `key` to read for what is left of its quantum (by the width of its
        rows so far; at least one), or `max_rows` (None: the light lane)."""
        if key is None or key not in self.width:
            return max_rows
        left = self.quantum - self.spent.get(key, 0)
        return max(1, min(max_rows, math.ceil(left / max(1.0, self.width[key]))))

    def charge(self, key: str, rows: int) -> None:
        """`key`'s interaction was written, `rows` postings and words."""
        self.width[key] = 0.8 * self.width[key] + 0.2 * rows if key in self.width else rows
        self.spent[key] = self.spent.get(key, 0) + rows
        if self.spent[key] >= self.quantum:
            self.heavy[key] = None
            self._reached.add(key)


def pending_batch(con: Connection, *, max_rows: int, max_bytes: int, after: str | None,
                  skip: Sequence[str] = (), only: str | None = None,
                  ) -> tuple[pa.Table, bool, dict[str, str]]:
    """An indexer batch (at most `max_rows` rows and about `max_bytes` bytes, oldest first,
    after `after`) of the rows of the keys not in `skip` (or of the key `only`), whether more
    may be listed after it, and the key of each row."""
    listed = keyed_sizes(con, max_rows, after, skip, only)
    keys = {item: key for item, _, key in listed}
    sizes = sized(con, [(item, size) for item, size, _ in listed], max_bytes)
    taken = batch_ids(sizes, max_bytes)
    batch = read_rows(con, taken, sizes)
    more = len(taken) < len(listed) or len(listed) >= max_rows
    return batch, more, {item: keys[item] for item in taken}


def keyed_sizes(con: Connection, limit: int, after: str | None, skip: Sequence[str] = (),
                only: str | None = None) -> list[tuple[str, int | None, str]]:
    """Ids and sizes in bytes (as listed at ingest: no value is read; None when listed without
    one, before migration 53 or by an older replica) of up to `limit` rows not yet indexed,
    oldest first, after `after`, with the key listed with each ('' without one), of the keys
    not in `skip` or of the key `only`: `search_pending` alone is read."""
    if not table_exists(con, PENDING):
        return []
    where: list[str] = []
    params: list[Any] = []
    if only is not None:
        where.append(f"{KEY} = ?")
        params.append(only)
    elif skip:
        where.append(f"NOT ({KEY} = ANY(?::VARCHAR[]))")
        params.append(list(skip))
    if after is not None:
        where.append("interaction_id > ?")
        params.append(after)
    condition = f"WHERE {' AND '.join(where)} " if where else ""
    rows = con.execute(
        f"SELECT interaction_id, text_bytes, {KEY} FROM {PENDING} {condition}"
        "ORDER BY interaction_id LIMIT ?", [*params, limit]).fetchall()
    return [(str(r[0]), None if r[1] is None else int(r[1]), str(r[2])) for r in rows]
