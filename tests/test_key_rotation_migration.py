"""Migration 54 (key rotation links, storage/keys.py `rotate_key`) on both stores: a store
from before it keeps its keys, which rotate unlinked (their rows' digest was never recorded);
keys issued after it rotate linked, a chain sharing its first key's stratum."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from storage.backend import is_postgres_url
from storage.keys import create_key, hash_key, key_hashes, list_keys, rotate_key
from storage.store import migrate_store, open_store
from tests.conftest import UPSTREAM_KEY, ProxyServer, both_stores
from tests.test_canary_strata import ALIAS, Deployment
from tuneloop.errors import BadRequest, NotFound

pytestmark = both_stores


LEGACY = "tl-legacy-key-issued-before-migration-54"


def store_before_54(store: str) -> Any:
    """The store at migration 52 with a key issued then (`key_old`, LEGACY), left open."""
    db = open_store(store if is_postgres_url(store) else Path(store))
    migrate_store(db, up_to=52)

    def old_key(con: Any) -> None:
        con.execute("INSERT INTO api_keys (id, name, key_hash, prefix, created_at) "
                    "VALUES ('key_old', 'legacy', ?, 'tl-lega', ?)",
                    [hash_key(LEGACY), datetime.now(UTC)])
    db.write_sync(old_key)
    return db


def test_keys_from_before_migration_54_rotate_unlinked_and_new_ones_linked(store: str) -> None:
    db = store_before_54(store)
    try:
        migrate_store(db)
        unlinked = db.write_sync(lambda con: rotate_key(con, "key_old", "tl-next", "d-next"))
        assert unlinked["linked"] is False and "before keys recorded" in unlinked["warning"]
        first = db.write_sync(lambda con: create_key(con, "app", False, "tl-one", "d-one"))
        second = db.write_sync(lambda con: rotate_key(con, first["id"], "tl-two", "d-two",
                                                      grace_hours=1))
        third = db.write_sync(lambda con: rotate_key(con, second["id"], "tl-three", "d-three"))
        with pytest.raises(NotFound):  # revoked now: nothing to rotate
            db.write_sync(lambda con: rotate_key(con, second["id"], "tl-x", "d-x"))
        with pytest.raises(BadRequest):
            db.write_sync(lambda con: rotate_key(con, third["id"], "tl-y", "d-y", -1))
        strata = dict(db.read_sync(lambda con: con.execute(
            "SELECT client_key, stratum FROM api_keys").fetchall()))
        hashes, _, until, undigested = db.read_sync(key_hashes)
        listed = {key["id"]: key for key in db.read_sync(list_keys)}
    finally:
        db.close()
    assert second["linked"] is True and third["linked"] is True
    assert strata["d-one"] == strata["d-two"] == strata["d-three"] == first["id"]
    assert strata["d-next"] is None and strata[None] is None  # the legacy key: no digest
    # the legacy key is revoked now, the first key is in its hour's grace, the second was
    # rotated without one; the newest ones are valid
    assert hash_key(LEGACY) not in hashes and hash_key("tl-one") in hashes
    assert {hash_key(k) for k in ("tl-next", "tl-three")} <= hashes
    assert hash_key("tl-two") not in hashes
    assert set(until) == {hash_key("tl-one")}
    assert undigested == set()  # the legacy key, the only one without a digest: revoked
    assert until[hash_key("tl-one")] - datetime.now(UTC) < timedelta(hours=1)
    assert listed[third["id"]]["rotated_from"] == second["id"]


def test_a_key_from_before_migration_54_is_linked_once_it_sent_a_request(
        store: str, proxy_factory: Callable[..., ProxyServer], tmp_path: Path) -> None:
    """The server never kept an old key's plaintext, so its rows' digest is recorded at its
    first request after the upgrade (proxy/shared_state.py `record_digest`): its rotation is
    then linked, and both keys' rows are one key in the health's `by_key`."""
    store_before_54(store).close()
    deployment = Deployment(proxy_factory(issue_keys=True, openai_api_key=UPSTREAM_KEY),
                            tmp_path)
    since = datetime.now(UTC).isoformat()
    deployment.send(deployment.proxy.openai(api_key=LEGACY).with_options(max_retries=0), 3)
    rotated = deployment.admin.rotate_key("key_old")
    assert rotated["linked"] is True, rotated
    deployment.send(deployment.proxy.openai(api_key=rotated["key"]).with_options(
        max_retries=0), 2)
    [row] = deployment.admin.route_health(ALIAS, since=since, by_key=True)["targets"]
    assert [counts["judged"] for counts in row["by_key"].values()] == [5], row["by_key"]


def test_rotating_a_key_in_its_grace_again_never_extends_its_life(store: str) -> None:
    """r14m LOW: rotating a key already in its grace period reset its end to the new grace
    (an hour's grace, then a second rotation with 720 hours: the old key valid for 30 days).
    Now the old key keeps the earlier end; a shorter new grace still shortens it."""
    db = open_store(store if is_postgres_url(store) else Path(store))
    try:
        migrate_store(db)
        old = db.write_sync(lambda con: create_key(con, "app", False, "tl-old", "d-old"))
        first = db.write_sync(lambda con: rotate_key(con, old["id"], "tl-new", "d-new",
                                                     grace_hours=1))
        again = db.write_sync(lambda con: rotate_key(con, old["id"], "tl-newer", "d-newer",
                                                     grace_hours=720))
        shorter = db.write_sync(lambda con: rotate_key(con, old["id"], "tl-last", "d-last",
                                                       grace_hours=0.5))
        _, _, until, _ = db.read_sync(key_hashes)
    finally:
        db.close()
    ends = [datetime.fromisoformat(answer["revoked_at"]) for answer in (first, again, shorter)]
    assert ends[1] == ends[0], ends
    assert ends[2] < ends[0]
    assert until[hash_key("tl-old")] - datetime.now(UTC) <= timedelta(minutes=30)
