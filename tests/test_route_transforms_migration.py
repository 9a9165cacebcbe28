"""Migration 45: a stored route's route-level separator and stop sequence move onto the
targets a promotion put there with them (the legacy fine-tunes), on both stores."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from storage.backend import is_postgres_url
from storage.routes import load_routes
from storage.store import migrate_store, open_store
from tests.conftest import both_stores

pytestmark = both_stores

SEPARATOR = {"type": "legacy_separator", "separator": "\n\n###\n\n"}
STOP = {"type": "stop", "stop": "###"}


def _route(con: Any, alias: str, spec: dict[str, Any],
           promoted: list[tuple[str, dict[str, Any]]]) -> None:
    now = datetime.now(UTC)
    con.execute("INSERT INTO routes (alias, spec, updated_at, updated_by) VALUES (?, ?, ?, ?)",
                [alias, orjson.dumps(spec).decode(), now, "test"])
    for model, then in promoted:
        con.execute("INSERT INTO route_history (alias, spec, action, changed_at, changed_by, "
                    "detail) VALUES (?, ?, 'promote', ?, 'test', ?)",
                    [alias, orjson.dumps(then).decode(), now,
                     orjson.dumps({"model": model, "canary": 10.0}).decode()])


def test_route_level_markers_move_onto_the_promoted_legacy_targets(store: str) -> None:
    db = open_store(store if is_postgres_url(store) else Path(store))
    try:
        migrate_store(db, up_to=44)
        legacy = {"prompt_suffix": "\n\n###\n\n", "stop": "###"}
        canary = {"targets": [{"model": "davinci-002", "weight": 90.0},
                              {"model": "ft:davinci-002:acme::v2", "weight": 10.0}],
                  "fallbacks": [{"model": "ft:davinci-002:acme::v1"}], **legacy}
        by_hand = {"targets": [{"model": "davinci-002"}], "fallbacks": [{"model": "b"}],
                   "stop": "END"}
        plain = {"targets": [{"model": "gpt-4o-mini"}]}

        def seed(con: Any) -> None:
            _route(con, "qa", canary, [
                ("ft:davinci-002:acme::v1", {"targets": [{"model": "x"}], **legacy}),
                ("ft:davinci-002:acme::v2", canary)])
            _route(con, "by-hand", by_hand, [])
            _route(con, "plain", plain, [("gpt-4o-mini", plain)])

        db.write_sync(seed)
        migrate_store(db)
        routes = db.read_sync(load_routes)
    finally:
        db.close()
    assert routes["qa"] == {
        "targets": [{"model": "davinci-002", "weight": 90.0},
                    {"model": "ft:davinci-002:acme::v2", "weight": 10.0,
                     "transforms": [SEPARATOR, STOP]}],
        "fallbacks": [{"model": "ft:davinci-002:acme::v1", "transforms": [SEPARATOR, STOP]}]}
    end = {"type": "stop", "stop": "END"}
    assert routes["by-hand"] == {"targets": [{"model": "davinci-002", "transforms": [end]}],
                                 "fallbacks": [{"model": "b", "transforms": [end]}]}
    assert routes["plain"] == plain
