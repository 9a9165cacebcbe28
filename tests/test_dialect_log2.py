"""The dialects' log2, which the token histogram of GET /admin/stats buckets by: floor(log2)
exact at every power of 2 and just below it, on both stores (Postgres computes it in DOUBLE,
not NUMERIC, for speed: bench/review_queries.py's stats at 1M rows)."""

from __future__ import annotations

from storage.backend.dialect import dialect_of
from tests.conftest import both_stores
from tests.test_search_languages import opened

pytestmark = both_stores


def test_floor_of_log2_is_exact_around_powers_of_two(store: str) -> None:
    values = [v for k in range(1, 41) for v in (2**k - 1, 2**k, 2**k + 1)]
    with opened(store) as con:
        log2 = dialect_of(con).log2("v")
        rows = con.execute(f"SELECT v, CAST(floor({log2}) AS BIGINT) FROM (SELECT "
                           "unnest(?::BIGINT[]) AS v) AS x", [values]).fetchall()
    assert {v: k for v, k in rows} == {v: v.bit_length() - 1 for v in values}
