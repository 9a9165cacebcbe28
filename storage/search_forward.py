"""The forward index of some interactions: what indexing them writes, computed without the
database (pure, vectorized with Arrow and numpy; the index worker process runs it).

Every way into the index (the background indexer, `index_batch`, edits, and the unindexed tail
search reads) goes through `forward_index`, on both stores, so every cap here holds the same
everywhere and search answers alike whether a row is indexed yet or not:

- each field of an interaction (system, user side, answers) is indexed by its first
  MAX_FIELD_TERMS distinct terms, in the order they come (review r12x2: a request of 50,000
  random words made one index write, and the checks of `term_keys` in search, run long); a
  term first seen past them is not findable in that field;
- an interaction adds at most its first MAX_ROW_WORDS distinct words (3 to 32 characters,
  with a letter) to `search_words`, the words prefix queries look up (review r12x3 MED 2: a
  row of 15,000 new random words wrote 15,000 rows there, ~60% of the indexer's time on
  Postgres and ~40% of the row's index bytes). A word past them is still found whole (its
  term is indexed), and by a prefix only when another interaction added it.

So an interaction writes at most 3 x MAX_FIELD_TERMS postings (`search_terms`), as many keys in
`search_docs`, and MAX_ROW_WORDS words, whatever a client sends (bench/wide_rows.py measures the
bytes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.search_text import terms

FIELDS = ("system", "user", "answer")
FIELD_BITS = {name: 1 << n for n, name in enumerate(FIELDS)}
MIN_WORD, MAX_WORD = 3, 32  # the words kept for prefix search
# the distinct terms indexed per field of an interaction: its first ones, in the order they
# come; the rest of a wider text is not findable. A bound on one row's index writes (and on
# the term_keys search checks), whatever a client sends: see storage.search_queue
MAX_FIELD_TERMS = 5000
# the distinct words an interaction adds for prefix search: its first ones, all fields (real
# rows are far below: this project's README has 2,556 distinct terms)
MAX_ROW_WORDS = 2000

TERMS_SCHEMA = pa.schema([("term_key", pa.int64()), ("interaction_id", pa.string()),
                          ("fields", pa.uint8())])
DOCS_SCHEMA = pa.schema([("interaction_id", pa.string()), ("term_keys", pa.list_(pa.int64())),
                         ("term_fields", pa.list_(pa.uint8()))])
WORDS_SCHEMA = pa.schema([("word", pa.string()), ("term_key", pa.int64()),
                          ("interaction_id", pa.string())])
Fields = tuple[str, str, str]


@dataclass(frozen=True)
class ForwardIndex:
    """What indexing a batch writes: per interaction its terms and their fields, and the new
    words for prefix search. Picklable: the worker process computes it."""
    docs: pa.Table
    words: pa.Table


def forward_index(ids: Sequence[str], fields: Sequence[Fields]) -> ForwardIndex:
    """The terms of each interaction once, with the bits of the fields they occur in. Pure
    and vectorized (Arrow and numpy): only the distinct terms of the batch reach Python."""
    if not ids:
        return ForwardIndex(DOCS_SCHEMA.empty_table(), WORDS_SCHEMA.empty_table())
    found = terms([text for triple in fields for text in triple])
    size = max(1, len(found.keys))
    pairs = _distinct_pairs(found.text_index, found.codes, size)
    text_index, codes = found.text_index, found.codes
    word_doc = found.word_first_text // 3
    if len(pairs) and np.bincount((pairs >> 2) // size * 3 + (pairs & 3)).max() \
            > MAX_FIELD_TERMS:  # some field of some interaction is wider than the cap
        kept = _first_terms(text_index, codes, size, MAX_FIELD_TERMS)
        text_index, codes = text_index[kept], codes[kept]
        pairs = _distinct_pairs(text_index, codes, size)
    term_of = pairs >> 2
    starts = np.flatnonzero(np.concatenate([[True], term_of[1:] != term_of[:-1]])) \
        if len(pairs) else np.zeros(0, np.int64)
    bits = np.bitwise_or.reduceat(np.left_shift(1, pairs & 3).astype(np.uint8), starts) \
        if len(pairs) else np.zeros(0, np.uint8)
    doc, code = np.divmod(term_of[starts], size)
    if len(doc) and np.bincount(doc).max() > MAX_ROW_WORDS:  # (and after a field's cap)
        word_doc = _first_words(text_index // 3, codes, found.words, len(ids))
    offsets = pa.array(np.concatenate([[0], np.cumsum(np.bincount(doc, minlength=len(ids)))]),
                       pa.int32())
    docs = pa.table([pa.array(ids, pa.string()),
                     pa.ListArray.from_arrays(offsets, pa.array(found.keys[code], pa.int64())),
                     pa.ListArray.from_arrays(offsets, pa.array(bits, pa.uint8()))],
                    schema=DOCS_SCHEMA).sort_by("interaction_id")
    return ForwardIndex(docs, _words(ids, found.words, found.keys[:len(found.words)],
                                     word_doc))


def _distinct_pairs(text_index: np.ndarray, codes: np.ndarray, size: int) -> np.ndarray:
    """One sort of (interaction, term, field) codes: each term of an interaction's field
    once ((interaction * size + term) * 4 + field, sorted)."""
    doc, field = np.divmod(text_index, 3)
    pairs = np.sort((doc * size + codes) * 4 + field)
    if len(pairs):
        pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]
    return pairs


def _first_terms(text_index: np.ndarray, codes: np.ndarray, size: int,
                 limit: int) -> np.ndarray:
    """Which terms (a mask) are among the first `limit` distinct terms of their text, in the
    order they come in it (the words of a text, then its CJK/Thai grams: storage.search_text
    `terms`)."""
    pair = text_index * size + codes
    distinct, first = np.unique(pair, return_index=True)
    text = distinct // size
    order = np.lexsort((first, text))  # by text, then by where each term first comes
    in_order = text[order]
    rank = np.arange(len(order)) - np.searchsorted(in_order, in_order, side="left")
    return np.isin(pair, distinct[order][rank < limit])


def _prefix_words(words: list[str]) -> pa.Array:
    """Which words (a mask) are worth a prefix search: 3 to 32 characters, with a letter."""
    text = pa.array(words, pa.string())
    length = pc.utf8_length(text)
    return pc.and_(pc.and_(pc.greater_equal(length, MIN_WORD), pc.less_equal(length, MAX_WORD)),
                   pc.match_substring_regex(text, r"\p{L}"))


def _first_words(doc: np.ndarray, codes: np.ndarray, words: list[str],
                 n_docs: int) -> np.ndarray:
    """For each word (a code below `len(words)`; `doc`, `codes`: the terms in the order they
    come), the first interaction it is one of the first MAX_ROW_WORDS prefix words of
    (`n_docs` where it is none's): the one that adds it to search_words. An interaction's
    words are the same whatever batch it is indexed in."""
    n_words = len(words)
    out = np.full(n_words, n_docs, np.int64)
    if n_words == 0:
        return out
    is_word = codes < n_words
    prefix_word = _prefix_words(words).to_numpy(zero_copy_only=False)
    is_word[is_word] = prefix_word[codes[is_word]]
    pair = doc[is_word] * n_words + codes[is_word]
    distinct, first = np.unique(pair, return_index=True)
    owner = distinct // n_words
    order = np.lexsort((first, owner))  # by interaction, then by where each word first comes
    in_order = owner[order]
    rank = np.arange(len(order)) - np.searchsorted(in_order, in_order, side="left")
    kept = distinct[order][rank < MAX_ROW_WORDS]
    np.minimum.at(out, kept % n_words, kept // n_words)
    return out


def _words(ids: Sequence[str], words: list[str], keys: np.ndarray,
           doc: np.ndarray) -> pa.Table:
    """The words worth a prefix search, each with the interaction that adds it (`doc`; past
    the last interaction for a word no interaction adds: past a cap)."""
    if not words:
        return WORDS_SCHEMA.empty_table()
    text = pa.array(words, pa.string())
    keep = pc.and_(_prefix_words(words), pa.array(doc < len(ids)))
    where = pc.indices_nonzero(keep)
    return pa.table([pc.take(text, where), pa.array(keys).take(where),
                     pa.array(ids, pa.string()).take(pa.array(doc).take(where))],
                    schema=WORDS_SCHEMA)

