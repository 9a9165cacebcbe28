"""Text search (`q`) over the term index of `storage.search_index`.

A query is cut like the indexed text (`storage.search_text`): words (English words by their
stem: `refund` finds "refunds" and "refunded"), a word ending in `*` as a prefix (`refu*`
finds every word seen that starts with "refu"), and runs of Chinese, Japanese, Korean or
Thai as character bigrams (`パスワード` finds "パスワードをリセット"). An interaction matches
when it holds every term of the query in the searched fields (`q_in`):

- `conversation` (the default): the user's side and the answers, not the system prompt, which
  many items share (a word of a shared system prompt would otherwise match them all);
- `answers`: the assistant's messages only;
- `all`: the system prompt too.

The rarest term (estimated on the newest postings) drives the search: its postings give
candidates newest first; the other terms are checked on those candidates only, through the
per-interaction term keys. On Postgres, once migration 51 is finished
(storage.search_vectors), a query of several terms whose matches are sparse among those
postings asks the GIN index of the per-interaction tsvector for its joint matches, capped
(storage.search_pg): few, they are the answer; many, the walk goes on (TermSearch).

The index is written by a background indexer (storage.search_queue), a moment after ingest.
The interactions ingested and not yet indexed (the newest TAIL_ROWS of them of at most
TAIL_ROW_BYTES each, within TAIL_BYTES of text: storage.search_tail) are tokenized at query
time and matched too, so a row is found as soon as it is ingested. Beyond that (the indexer far
behind: `tuneloop_search_index_lag_rows` in /metrics), the older unindexed rows, and a row that
is bigger or no longer fits in TAIL_BYTES, are found once indexed; a prefix (`refu*`) finds an
unindexed row by the words already seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from storage.backend.dialect import dialect_of
from storage.db import Connection
from storage.lookup import ids_condition
from storage.search_forward import FIELD_BITS
from storage.search_index import batch_forward_index
from storage.search_pg import JOINT_CAP, KnownMatches, joint_matches, small_groups
from storage.search_tail import DEFAULT_TAIL, TailLimits, tail_rows
from storage.search_text import grams, stems, term_key, tokenize
from storage.search_vectors import vectors_ready
from tuneloop.errors import BadRequest

MAX_QUERY_TERMS = 8  # words, prefixes and runs of characters
MAX_QUERY_GRAMS = 32
MIN_PREFIX = 2
MAX_PREFIX_WORDS = 1000
SAMPLE_POSTINGS = 2_000_000
SAMPLE_DOCS = 30_000  # on Postgres: the sample is the postings of the newest interactions
SPARSE = 16  # a batch of postings with fewer than 1/SPARSE matching: ask the GIN (Postgres)
SCOPES = {
    "conversation": FIELD_BITS["user"] | FIELD_BITS["answer"],
    "answers": FIELD_BITS["answer"],
    "all": FIELD_BITS["system"] | FIELD_BITS["user"] | FIELD_BITS["answer"],
}
DEFAULT_SCOPE = "conversation"


@dataclass(frozen=True)
class QueryTerm:
    """One thing a match must hold: a term (word stem or gram), or any word with a prefix."""
    text: str
    prefix: bool = False


def query_terms(q: str) -> list[str]:
    """The terms of a query as text (a prefix ends with *); a clear 400 for a query without
    any or with too many."""
    return [f"{t.text}*" if t.prefix else t.text for t in parse_query(q)]


def parse_query(q: str) -> list[QueryTerm]:
    """The terms of a query, in order; a clear 400 for a query without any or with too many."""
    try:
        q.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: no text to tokenize or send on
        raise BadRequest(f"q is not valid text: {exc.reason} at character {exc.start}",
                         param="q") from exc
    found: list[QueryTerm] = []
    units = 0
    for piece in q.split():
        is_prefix = piece.endswith("*")
        tokens = tokenize([piece.rstrip("*")])
        pairs = list(zip(tokens.tokens.to_pylist(), tokens.segmented.tolist(), strict=True))
        for n, (token, segmented) in enumerate(pairs):
            units += 1
            if segmented:
                found += [QueryTerm(g) for g in grams(token)]
            elif is_prefix and n == len(pairs) - 1:
                if len(token) < MIN_PREFIX:
                    raise BadRequest(f"a prefix needs at least {MIN_PREFIX} characters before "
                                     f"*: {piece!r}", param="q")
                found.append(QueryTerm(token, prefix=True))
            else:
                found.append(QueryTerm(stems([token])[0]))
    if not found:
        raise BadRequest("q must contain at least one word", param="q")
    if units > MAX_QUERY_TERMS:
        raise BadRequest(f"q may contain at most {MAX_QUERY_TERMS} words", param="q")
    if len(found) > MAX_QUERY_GRAMS:
        raise BadRequest(f"q is too long: at most {MAX_QUERY_GRAMS} terms (a run of N "
                         "Chinese, Japanese, Korean or Thai characters is N-1 terms)", param="q")
    return list(dict.fromkeys(found))


def scope_bits(q_in: str) -> int:
    if q_in not in SCOPES:
        raise BadRequest(f"q_in must be one of {', '.join(SCOPES)}", param="q_in")
    return SCOPES[q_in]


def term_keys(con: Connection, term: QueryTerm) -> frozenset[int]:
    """The keys that satisfy a term: its own, or for a prefix every word seen with it."""
    if not term.prefix:
        return frozenset([term_key(term.text)])
    match, params = dialect_of(con).prefix_match("word", term.text)
    rows = con.execute(f"SELECT DISTINCT term_key FROM search_words WHERE {match} LIMIT ?",
                       [*params, MAX_PREFIX_WORDS + 1]).fetchall()
    if len(rows) > MAX_PREFIX_WORDS:
        raise BadRequest(f"{term.text}* matches more than {MAX_PREFIX_WORDS} words; type more "
                         "of the word", param="q")
    return frozenset([term_key(stems([term.text])[0]), *(r[0] for r in rows)])


def _key_list(keys: frozenset[int]) -> str:
    """Keys inlined as SQL literals (integers only): DuckDB then filters the scan with them."""
    return ", ".join(str(int(k)) for k in sorted(keys))


def rarest(con: Connection, groups: Sequence[frozenset[int]], bits: int) -> int:
    """The index of the group with the fewest postings among the newest ones (a sample)."""
    if len(groups) == 1:
        return 0
    every = frozenset().union(*groups)
    newest, params = newest_postings(con)
    counts = dict(con.execute(
        f"SELECT term_key, count(*) FROM search_terms WHERE {newest} AND term_key IN "
        f"({_key_list(every)}) AND (fields & ?) <> 0 GROUP BY 1", [*params, bits]).fetchall())
    return min(range(len(groups)), key=lambda n: sum(counts.get(k, 0) for k in groups[n]))


def newest_postings(con: Connection) -> tuple[str, list[Any]]:
    """The condition on search_terms that keeps its newest postings (the sample `rarest`
    counts in), the one part of search each database says its own way. DuckDB: the last
    SAMPLE_POSTINGS rows by rowid (postings arrive in id order; the scan skips row groups).
    Postgres has no rowid: the postings of the newest SAMPLE_DOCS interactions, which the
    (term_key, interaction_id) index of migration 39 counts as a short range per term."""
    if dialect_of(con).name == "duckdb":
        total = con.execute("SELECT count(*) FROM search_terms").fetchall()[0][0]
        return "rowid >= ?", [max(0, total - SAMPLE_POSTINGS)]
    bound = con.execute("SELECT interaction_id FROM search_docs ORDER BY interaction_id DESC "
                        "LIMIT 1 OFFSET ?", [SAMPLE_DOCS]).fetchall()
    return "interaction_id >= ?", [bound[0][0] if bound else ""]


class IndexedSearch(Protocol):
    def candidates(self, con: Connection, before: str | None,
                   count: int) -> tuple[list[str], str | None]: ...


class PostingsSearch:
    """The postings of the rarest term give candidates newest first; the other terms are
    checked on those candidates only, through the per-interaction term keys."""

    def __init__(self, con: Connection, groups: Sequence[frozenset[int]], bits: int):
        self.bits = bits
        driver = rarest(con, groups, bits)
        self.driver = groups[driver]
        self.others = [g for n, g in enumerate(groups) if n != driver]

    def candidates(self, con: Connection, before: str | None,
                   count: int) -> tuple[list[str], str | None]:
        """Ids below `before` that hold every term, newest first, from the next `count`
        postings of the driving term; and where the next batch starts (None: no more)."""
        keys = (f"term_key = {next(iter(self.driver))}" if len(self.driver) == 1
                else f"term_key IN ({_key_list(self.driver)})")
        sql = f"SELECT interaction_id FROM search_terms WHERE {keys}"
        params: list[Any] = []
        if self.bits != SCOPES["all"]:
            sql += " AND (fields & ?) <> 0"
            params.append(self.bits)
        if before is not None:
            sql += " AND interaction_id < ?"
            params.append(before)
        rows = con.execute(sql + " ORDER BY interaction_id DESC LIMIT ?",
                           [*params, count]).fetchall()
        next_before = rows[-1][0] if len(rows) == count else None
        ids = list(dict.fromkeys(r[0] for r in rows))  # an edit may add a second posting
        if ids and self.others:
            ids = holding_every(con, ids, self.others, self.bits)
        return ids, next_before


def holding_every(con: Connection, ids: list[str], groups: Sequence[frozenset[int]],
                  bits: int) -> list[str]:
    """Of indexed `ids`, those holding every group in the fields `bits` (their term keys)."""
    where, params = ids_condition("interaction_id", ids)
    held: dict[str, set[int]] = {}
    for item, keys, fields in con.execute(
            f"SELECT interaction_id, term_keys, term_fields FROM search_docs WHERE {where}",
            params).fetchall():
        held[item] = {k for k, f in zip(keys, fields, strict=True) if f & bits}
    return [i for i in ids if i in held and all(not held[i].isdisjoint(g) for g in groups)]


class TermSearch:
    """Candidates for a query, newest first, in batches (see `storage.queue`): from the
    index, and from the unindexed tail. The index is read by the postings of the rarest term
    (PostingsSearch). On Postgres, once its tsvector is ready (migration 51), a query of
    several terms whose matches are sparse in a batch of those postings asks the GIN for its
    joint matches below it (storage.search_pg), taken as they are when they are few: the
    walk could read every posting of a common term for them (`alpha tok3 filler5`: 4.4 s a
    page at 300k rows). When they are dense, or many, the walk goes on: it finds a page among
    its newest postings (`alpha beta`, in 60,000 old rows together: 16 ms, 50 ms with the
    GIN's bitmap first)."""

    def __init__(self, con: Connection, q: str, q_in: str = DEFAULT_SCOPE, *,
                 joint_cap: int = JOINT_CAP, tail: TailLimits = DEFAULT_TAIL):
        self.bits = scope_bits(q_in)
        self.groups = list(dict.fromkeys(term_keys(con, t) for t in parse_query(q)))
        self.joint_cap = joint_cap
        self.indexed: IndexedSearch = PostingsSearch(con, self.groups, self.bits)
        self.asked = small_groups(self.groups, self.bits)  # of the GIN
        # one term: its postings are its matches
        self.joint_asked = len(self.groups) == 1 or not self.asked
        self.tail = unindexed_matches(con, self.groups, self.bits, tail)

    def candidates(self, con: Connection, before: str | None,
                   count: int) -> tuple[list[str], str | None]:
        """Ids below `before` that hold every term, newest first, from the index's next
        batch and the unindexed tail within it; and where the next batch starts (None: no
        more)."""
        ids, next_before = self.indexed.candidates(con, before, count)
        if not self.joint_asked and next_before is not None and len(ids) * SPARSE < count:
            self.joint_asked = True
            joint = joint_matches(con, self.asked, self.bits, below=next_before,
                                  cap=self.joint_cap) if vectors_ready(con) else None
            if joint is not None:
                if joint and len(self.asked) < len(self.groups):
                    joint = holding_every(con, joint, self.groups, self.bits)
                self.indexed = KnownMatches(joint)
        tail = [i for i in self.tail if (before is None or i < before)
                and (next_before is None or i >= next_before)]
        if tail:
            ids = sorted({*ids, *tail}, reverse=True)
        return ids, next_before

    def matching(self, con: Connection, ids: Sequence[str]) -> list[str]:
        """Of `ids`, those holding every term, indexed or in the unindexed tail."""
        if not ids:
            return []
        held = set(holding_every(con, list(ids), self.groups, self.bits))
        return [i for i in ids if i in self.tail or i in held]


def unindexed_matches(con: Connection, groups: Sequence[frozenset[int]],
                      bits: int, tail: TailLimits = DEFAULT_TAIL) -> list[str]:
    """The ids of the newest interactions not indexed yet that hold every group's terms in
    the fields `bits`, newest first (tokenized here: the tail is small, in rows and bytes)."""
    batch = tail_rows(con, tail)
    if batch.num_rows == 0:
        return []
    docs = batch_forward_index(batch).docs
    found = []
    for item, keys, fields in zip(docs["interaction_id"].to_pylist(),
                                  docs["term_keys"].to_pylist(),
                                  docs["term_fields"].to_pylist(), strict=True):
        held = {k for k, f in zip(keys, fields, strict=True) if f & bits}
        if all(not held.isdisjoint(group) for group in groups):
            found.append(item)
    return sorted(found, reverse=True)
