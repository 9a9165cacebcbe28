"""The tokenizer's fast path for ASCII text (numpy over the bytes) splits exactly as the regex
path does (runs of letters, digits and `_`, at most MAX_TERM_LENGTH), texts mixed with
non-ASCII ones included; and the background indexer reads ahead without skipping a row."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np

from storage.records import insert_interactions, to_arrow
from storage.search_index import SearchIndexer, queue_for_index
from storage.search_queue import BackgroundIndexer
from storage.search_text import MAX_TERM_LENGTH, normalize, terms_of, tokenize
from storage.store import migrate_store, open_store
from tests.conftest import both_stores

ASCII_TEXTS = [
    "", " ", "Refund!!the order,please", "__init__ x_y-z 42nd 3.14 a", "x" * MAX_TERM_LENGTH,
    "y" * (MAX_TERM_LENGTH + 1) + " after", "tab\there\nnew\rline", "end_", "_start",
    "C++ & C# <tag attr='v'>", "don't stop", "\x00nul\x7fdel\x1bescape", "UPPER lower MiXeD",
]
MIXED_TEXTS = [*ASCII_TEXTS[:4], "naïve café パスワード", *ASCII_TEXTS[4:], "東京 ok"]


def expected(texts: list[str]) -> list[tuple[int, str]]:
    """The regex rule on ASCII text: runs of [A-Za-z0-9_] of at most MAX_TERM_LENGTH."""
    return sorted((n, word) for n, text in enumerate(texts)
                  for word in re.findall(r"[A-Za-z0-9_]+", normalize(text))
                  if len(word) <= MAX_TERM_LENGTH)


def found(texts: list[str]) -> list[tuple[int, str]]:
    tokens = tokenize(texts)
    return sorted(zip(tokens.text_index.tolist(), tokens.tokens.to_pylist(), strict=True))


def test_ascii_texts_split_as_the_regex_rule() -> None:
    assert found(ASCII_TEXTS) == expected(ASCII_TEXTS)
    assert not tokenize(ASCII_TEXTS).segmented.any()


def test_ascii_texts_beside_others_keep_their_text_numbers() -> None:
    ascii_numbers = [n for n, t in enumerate(MIXED_TEXTS) if t.isascii()]
    tokens = found(MIXED_TEXTS)
    assert [t for t in tokens if t[0] in ascii_numbers] == \
        [(ascii_numbers[n], w) for n, w in expected([MIXED_TEXTS[k] for k in ascii_numbers])]
    assert (4, "naïve") in tokens and (4, "パスワード") in tokens
    segmented = tokenize(MIXED_TEXTS).segmented
    assert segmented.sum() == 2 and isinstance(segmented, np.ndarray)  # パスワード, 東京
    assert terms_of("refunds REFUNDED_x") == ["refund", "refunded_x"]


@both_stores
def test_the_indexer_reading_ahead_indexes_every_listed_row(store: str, tmp_path: Path) -> None:
    rows = [{"id": f"0190-{n:08d}", "created_at": 1_700_000_000_000_000 + n,
             "endpoint": "chat.completions", "model": "m", "traffic": "production",
             "request": '{"messages": [{"role": "user", "content": "word' + str(n) + '"}]}',
             "response": '{"choices": []}', "status_code": 200, "stream": False}
            for n in range(23)]

    async def run() -> tuple[int, int, int]:
        db = open_store(store)
        try:
            migrate_store(db)
            db.write_sync(lambda con: insert_interactions(con, to_arrow(rows),
                                                          then=queue_for_index))
            indexer = BackgroundIndexer(db, SearchIndexer(None), batch_rows=5)
            indexed = await indexer.index_pending()
            docs = await db.read(lambda con: con.execute(
                "SELECT count(DISTINCT interaction_id) FROM search_terms").fetchall()[0][0])
            return indexed, indexer.stats.lag_rows, int(docs)
        finally:
            db.close()

    assert asyncio.run(run()) == (23, 0, 23)
