"""Migration 45: a route's legacy separator and stop sequence move from the route onto the
targets that need them (per-target transforms, proxy.transforms).

Before, `promote --from-export` set `prompt_suffix` and `stop` on the whole route, so during a
canary the current model got them too. Each target or fallback that a promotion put in the
route while it carried them (the legacy fine-tunes, found in `route_history`) now carries them
as its own `legacy_separator` and `stop` transforms; the other targets get the app's request
as sent. A route whose fields came from no promotion (set by hand) keeps them on every target
and fallback: what each receives is unchanged. Only the `routes` rows change; the history
keeps what was in effect (a rollback to an old spec still works, the proxy reads both forms).
"""

from __future__ import annotations

from typing import Any

import orjson

from storage.db import Connection


def _legacy_models(con: Connection, alias: str) -> set[str]:
    rows = con.execute("SELECT spec, detail FROM route_history WHERE alias = ? "
                       "AND action = 'promote'", [alias]).fetchall()
    models: set[str] = set()
    for spec_text, detail_text in rows:
        spec = orjson.loads(spec_text) if spec_text else {}
        detail = orjson.loads(detail_text) if detail_text else {}
        legacy = isinstance(spec, dict) and (spec.get("prompt_suffix")
                                             or spec.get("stop") is not None)
        if legacy and isinstance(detail, dict) and isinstance(detail.get("model"), str):
            models.add(detail["model"])
    return models


def moved_spec(spec: dict[str, Any], legacy: set[str]) -> dict[str, Any]:
    """The spec with its route-level fields on the targets in `legacy` (all when none is)."""
    transforms: list[dict[str, Any]] = []
    if spec.get("prompt_suffix"):
        transforms.append({"type": "legacy_separator", "separator": spec["prompt_suffix"]})
    if spec.get("stop") is not None:
        transforms.append({"type": "stop", "stop": spec["stop"]})
    members = [t for key in ("targets", "fallbacks") for t in spec.get(key) or []
               if isinstance(t, dict)]
    chosen = [t for t in members if t.get("model") in legacy] or members
    for target in chosen:
        own = target.setdefault("transforms", [])
        kinds = {t.get("type") for t in own if isinstance(t, dict)}
        own.extend(t for t in transforms if t["type"] not in kinds)
    return {k: v for k, v in spec.items() if k not in ("prompt_suffix", "stop")}


def apply(con: Connection) -> None:
    for alias, spec_text in con.execute("SELECT alias, spec FROM routes").fetchall():
        spec = orjson.loads(spec_text)
        if not isinstance(spec, dict) or (not spec.get("prompt_suffix")
                                          and spec.get("stop") is None):
            continue
        con.execute("UPDATE routes SET spec = ? WHERE alias = ?",
                    [orjson.dumps(moved_spec(spec, _legacy_models(con, alias))).decode(), alias])
