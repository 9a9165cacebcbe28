"""Text search in every language, by field, with stems and prefixes, on both stores (a real
DuckDB file, a real Postgres database: one tokenizer, the same items found): Chinese,
Japanese, Korean and Thai without spaces between words, a system prompt many items share,
answers only, and the rebuild of an older index by migration 35."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from storage.backend import is_postgres_url, staged
from storage.backend.pg_connection import PgConnection
from storage.db import Connection, connect
from storage.governance import forget_user
from storage.migrations import MIGRATIONS, Migration, migrate
from storage.queue import ReviewQuery, find_ids
from storage.records import insert_interactions, to_arrow
from storage.review import ReviewAction, apply_reviews
from storage.search import query_terms
from storage.search_index import backfill, index_batch
from storage.search_text import terms_of
from tests.conftest import STORES, both_stores
from tests.pg_cluster import PgCluster
from tuneloop.errors import BadRequest

SHARED_SYSTEM = "You are Acme's support bot. Refunds are handled by the billing team."


def item(k: int, user: str, answer: str, system: str = SHARED_SYSTEM) -> dict[str, Any]:
    return {"id": f"{0x01900000 + k:08x}-0000-7000-8000-000000000000",
            "created_at": 1_700_000_000_000_000 + k, "endpoint": "chat.completions",
            "model": "m", "traffic": "production", "status_code": 200, "tags": [],
            "request": orjson.dumps({"messages": [{"role": "system", "content": system},
                                                  {"role": "user", "content": user}]}).decode(),
            "response": orjson.dumps({"choices": [{"index": 0, "message": {
                "role": "assistant", "content": answer}}]}).decode()}


TEXTS = [
    ("パスワードをリセットしたいです", "設定画面から変更できます"),  # 0 Japanese
    ("忘记密码了怎么办", "请点击重置链接"),  # 1 Chinese
    ("비밀번호를 잊어버렸어요", "재설정 링크를 보내드렸습니다"),  # 2 Korean
    ("ลืมรหัสผ่าน", "กรุณารีเซ็ต"),  # 3 Thai
    ("Where are my refunds?", "Your order shipped yesterday."),  # 4
    ("The parcel never came", "We refunded you on Monday."),  # 5
    ("Is this refundable?", "Yes, within 30 days."),  # 6
    ("Can I refuel the car here?", "Sure."),  # 7
    ("I need an invoice", "Here is the shipping address."),  # 8
    ("ＲＥＦＵＮＤ ＮＯＷ", "Calm down, STRASSE 5 is noted."),  # 9 full-width: NFKC
    ("パスポートの申請", "Straße 5"),  # 10
    ("hello", "hello"),  # 11
]


def ids(*numbers: int) -> list[str]:
    return sorted((f"{0x01900000 + k:08x}-0000-7000-8000-000000000000" for k in numbers),
                  reverse=True)


def load(con: Connection, rows: list[dict[str, Any]]) -> None:
    table = to_arrow(rows)
    insert_interactions(con, table)
    index_batch(con, table)


@contextmanager
def opened(store: str, *, up_to: int | None = None,
           migrations: Sequence[Migration] | None = None) -> Iterator[Connection]:
    """A migrated connection to the store (a DuckDB path or a Postgres URL), like the
    connections storage functions get; statements outside BEGIN commit at once.
    `migrations`: as `migrate`'s (None: all of them)."""
    if not is_postgres_url(store):
        duck = connect(Path(store))
        migrate(duck, up_to=up_to, migrations=migrations)
        try:
            yield duck
        finally:
            duck.close()
        return
    raw = psycopg.connect(store, autocommit=True, options="-c timezone=UTC")
    try:
        migrate(PgConnection(raw, ddl=True), up_to=up_to, migrations=migrations)
        yield PgConnection(raw)
    finally:
        raw.close()


@pytest.fixture(scope="module", params=STORES)
def con(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connection]:
    if request.param == "duckdb":
        store = str(tmp_path_factory.mktemp("s") / "s.duckdb")
    else:
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        store = cluster.create_database()
    with opened(store) as con:
        load(con, [item(k, user, answer) for k, (user, answer) in enumerate(TEXTS)])
        yield con
    if request.param == "postgres":
        cluster.drop_database(store)


def found(con: Connection, q: str, q_in: str = "conversation") -> list[str]:
    return find_ids(con, ReviewQuery(q=q, q_in=q_in), limit=50)[0]


@pytest.mark.parametrize(("q", "hits"), [
    ("パスワード", [0]), ("リセット", [0]), ("ワード", [0]), ("パス", [0, 10]), ("設定", [0]),
    ("パスポート", [10]), ("ス", [0, 10]), ("密码", [1]), ("重置", [1]), ("密", [1]),
    ("비밀번호", [2]), ("잊어버렸", [2]), ("รหัสผ่าน", [3]), ("ﾊﾟｽﾜｰﾄﾞ", [0]),
    ("パスワード リセット", [0]), ("パスワード 密码", []),
])
def test_words_without_spaces_are_found(con: Connection, q: str, hits: list[int]) -> None:
    assert found(con, q) == ids(*hits)


def test_a_shared_system_prompt_does_not_match_every_item(con: Connection) -> None:
    assert found(con, "refunds") == ids(4, 5, 6, 9)  # users' and answers' words, stemmed
    assert found(con, "billing") == []  # only in the system prompt
    assert found(con, "billing", q_in="all") == ids(*range(len(TEXTS)))
    assert found(con, "refunds", q_in="all") == ids(*range(len(TEXTS)))


def test_answers_only(con: Connection) -> None:
    assert found(con, "invoice") == ids(8)
    assert found(con, "invoice", q_in="answers") == []
    assert found(con, "shipping", q_in="answers") == ids(4, 8)  # shipped, shipping
    assert found(con, "refund", q_in="answers") == ids(5)
    assert found(con, "設定", q_in="answers") == ids(0)
    assert found(con, "パスワード", q_in="answers") == []


def test_stems_prefixes_and_normalization(con: Connection) -> None:
    assert found(con, "refund") == ids(4, 5, 6, 9)  # refunds, refunded, refundable, ＲＥＦＵＮＤ
    assert found(con, "REFUNDED") == ids(4, 5, 6, 9)
    assert found(con, "refu*") == ids(4, 5, 6, 7, 9)  # refuel too
    assert found(con, "refue*") == ids(7)
    assert found(con, "ship* yesterday") == ids(4)
    assert found(con, "straße") == found(con, "strasse") == ids(9, 10)  # case-folded
    assert found(con, "hel*") == ids(11)
    for bad in ("r*", "*", "a b c d e f g h i", "パ" * 40):
        with pytest.raises(BadRequest):
            found(con, bad)
    with pytest.raises(BadRequest):
        found(con, "refund", q_in="system")


@both_stores
def test_an_edited_answer_is_found_in_its_field(store: str) -> None:
    with opened(store) as con:
        edited_answer_is_found(con)


def edited_answer_is_found(con: Connection) -> None:
    load(con, [item(0, "where is my parcel", "It left today.")])
    original = [{"role": "system", "content": SHARED_SYSTEM},
                {"role": "user", "content": "where is my parcel"}]
    apply_reviews(con, [ReviewAction(ids(0)[0], "edit", "ann", None,
                                     [*original, {"role": "assistant",
                                                  "content": "A voucher is on its way: 払い戻し"}],
                                     0)])
    assert found(con, "voucher", q_in="answers") == ids(0)
    assert found(con, "払い戻し", q_in="answers") == ids(0)
    assert found(con, "vouch*", q_in="answers") == ids(0)
    assert found(con, "parcel", q_in="answers") == []  # still the user's word only
    assert found(con, "today") == ids(0)  # the original's words stay searchable


def test_query_terms_are_cut_like_the_text() -> None:
    assert query_terms("パスワード") == ["パス", "スワ", "ワー", "ード"]
    assert query_terms("Refunds refu*") == ["refund", "refu*"]
    assert terms_of("Ｐａｓｓ") == ["pass"]
    assert {"パス", "ード", "ド"} <= set(terms_of("パスワード"))


@both_stores
def test_migration_35_rebuilds_an_older_index(store: str) -> None:
    with opened(store, up_to=30) as con:  # the index of migration 13: whole words, no fields
        # the rows as that version stored them (insert_interactions needs migration 40)
        table = to_arrow([item(k, user, answer) for k, (user, answer) in enumerate(TEXTS)]
                         ).drop_columns(["sent_request", "client_key"])
        columns = ", ".join(table.schema.names)
        with staged(con, "_old_rows", table, like="interactions"):
            con.execute(f"INSERT INTO interactions ({columns}) SELECT {columns} FROM _old_rows")
        con.execute("INSERT INTO search_docs VALUES (?, ARRAY[1, 2])", [ids(0)[0]])
        con.execute("INSERT INTO search_terms VALUES (1, ?)", [ids(0)[0]])
    with opened(store) as con:  # migrations 35 (the rebuild) and on
        rebuilt_index_is_searched(con)


def rebuilt_index_is_searched(con: Connection) -> None:
    assert con.execute("SELECT count(*) FROM search_docs").fetchall() == [(len(TEXTS),)]
    assert found(con, "パスワード") == ids(0) and found(con, "refund") == ids(4, 5, 6, 9)
    assert found(con, "billing") == [] and found(con, "refu*") == ids(4, 5, 6, 7, 9)
    # the backfill goes in chunks and skips what is indexed
    con.execute("DELETE FROM search_terms WHERE interaction_id IN (SELECT interaction_id "
                "FROM search_docs WHERE interaction_id > ?)", [ids(6)[0]])
    con.execute("DELETE FROM search_docs WHERE interaction_id > ?", [ids(6)[0]])
    assert backfill(con, chunk_rows=5) == len(TEXTS)
    assert found(con, "hello") == ids(11) and found(con, "refund") == ids(4, 5, 6, 9)
    assert con.execute("SELECT count(*) FROM search_docs").fetchall() == [(len(TEXTS),)]
    versions = [r[0] for r in con.execute("SELECT version FROM _migrations ORDER BY 1").fetchall()]
    assert versions == [m.version for m in MIGRATIONS]


@both_stores
def test_forgetting_a_user_removes_their_words_from_prefix_search(store: str) -> None:
    with opened(store) as con:
        forgotten_words_are_gone(con)


def forgotten_words_are_gone(con: Connection) -> None:
    rows = [item(0, "my name is Zanzibarova, common question", "ok"),
            item(1, "another common question", "ok")]
    rows[0]["user_id"], rows[1]["user_id"] = "u-gone", "u-kept"
    load(con, rows)
    assert found(con, "zanzi*") == ids(0) and found(con, "comm*") == ids(0, 1)
    forget_user(con, "u-gone")
    words = {r[0] for r in con.execute("SELECT word FROM search_words").fetchall()}
    assert "zanzibarova" not in words and "another" in words
    assert found(con, "zanzi*") == [] and found(con, "another") == ids(1)
    load(con, [item(2, "common again", "ok")])  # a word seen again returns
    assert found(con, "comm*") == ids(1, 2)
