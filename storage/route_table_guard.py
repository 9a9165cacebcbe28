"""The guard of a whole-table write (PUT /admin/routes, `tuneloop routes set`), which replaces
every alias at once, so a stale or partial table would silently undo what happened since:

- a write that changes anything needs `expect_seq` or `force` once the route table has history
  (or when it would delete an alias by leaving it out): refused with PreconditionRequired
  (428 `expect_seq_required`) otherwise. A table written without knowing what it replaces
  would put a promoted alias back to its old split, or delete an alias, without a word;

- `expect_seq`: the table version the caller read (the route history's latest seq, across all
  aliases; GET /admin/routes?with_seq=true). The write is refused (Conflict `route_changed`)
  when an alias it changes or deletes has history after it: a promotion, rollback or edit
  the caller never saw (e.g. the cycle promoting its canary fully while a person edited
  another alias). Aliases it leaves as they are may have moved: nothing of theirs is undone.
- an alias with an open canary (storage/promotions.py `open_canary`) that the write changes or
  deletes is refused (Conflict `open_canary`) unless forced: the canary's watch, second
  opinions and test would end with no decision, or its traffic go upstream as the alias's
  name. Settle it first (`promote` fully, `rollback`), or force the edit (a deliberate A/B
  split of the stable arm, say; a rollback then takes the canary out of the edited route).
"""

from __future__ import annotations

from shlex import quote
from typing import Any

from storage.db import Connection
from storage.promotions import open_canary
from storage.rollback_edits import changes_since
from tuneloop.errors import Conflict, PreconditionRequired

Spec = dict[str, Any]


def table_seq(con: Connection) -> int | None:
    """The route table's version: the latest route history seq of any alias."""
    value = con.execute("SELECT max(seq) FROM route_history").fetchall()[0][0]
    return None if value is None else int(value)


def alias_seqs(con: Connection) -> dict[str, int]:
    rows = con.execute("SELECT alias, max(seq) FROM route_history GROUP BY alias").fetchall()
    return {str(alias): int(seq) for alias, seq in rows}


def touched(current: dict[str, Spec], specs: dict[str, Spec]) -> list[str]:
    """The aliases a table write changes or deletes."""
    return sorted([a for a in current if a not in specs]
                  + [a for a, spec in specs.items() if current.get(a) != spec])


def require_expect_seq(con: Connection, current: dict[str, Spec], specs: dict[str, Spec],
                       aliases: list[str]) -> None:
    """PreconditionRequired for a write without `expect_seq` or `force` that changes an alias
    once the table has history, or deletes one by leaving it out."""
    seq = table_seq(con)
    left_out = sorted(current.keys() - specs.keys())
    if not aliases or (seq is None and not left_out):
        return
    why = f"the route table has history (#{seq})" if seq is not None else "aliases have routes"
    deletes = f" and deletes {', '.join(map(repr, left_out))} (left out)" if left_out else ""
    raise PreconditionRequired(
        f"{why}, and this PUT replaces the whole table: it changes {', '.join(map(repr, aliases))}"
        f"{deletes} without saying which version it was written from, so it could silently undo "
        "a promotion, rollback or edit made since. Send expect_seq (the `seq` of GET "
        "/admin/routes?with_seq=true, the table you edited: a 409 then names any change it "
        "would undo) or force=true to write it as it is (`tuneloop routes set` sends "
        "expect_seq; --force)", code="expect_seq_required", param="expect_seq")


def check_table_write(con: Connection, current: dict[str, Spec], specs: dict[str, Spec],
                      expect_seq: int | None, force: bool) -> None:
    aliases = touched(current, specs)
    if expect_seq is None and not force:
        require_expect_seq(con, current, specs, aliases)
    if expect_seq is not None:
        seq = table_seq(con)
        if expect_seq > (seq if seq is not None else 0) or expect_seq < 0:
            raise Conflict(f"expect_seq {expect_seq} is no version of this route table (its "
                           f"latest is #{seq if seq is not None else 0}): it was read from "
                           "another store or made up, so it cannot say what this write would "
                           "undo. Read the table again (GET /admin/routes?with_seq=true, "
                           "`tuneloop routes show`) and make the change on it",
                           code="route_changed")
        seqs = alias_seqs(con)
        moved = [a for a in aliases if seqs.get(a, -1) > expect_seq]
        if moved:
            what = "; ".join(f"{a}: " + ", ".join(changes_since(con, a, expect_seq))
                             for a in moved)
            raise Conflict(f"the route table changed since it was read (#{expect_seq}), and "
                           f"this write would undo it: {what}. Read the table again "
                           "(`tuneloop routes show`) and make the change on it",
                           code="route_changed")
    if force:
        return
    for alias in aliases:
        episode = open_canary(con, alias)
        if episode is None:
            continue
        how = "delete the alias" if alias not in specs else "change its route"
        raise Conflict(
            f"route {alias!r} has an open canary of {episode.model} ({episode.canary:g}% "
            f"since {episode.promoted_at.isoformat(timespec='seconds')}) and this write would "
            f"{how}: settle the canary first (`tuneloop promote --alias {quote(alias)} --model "
            f"{quote(episode.model)}` or `tuneloop rollback --alias {quote(alias)}`), or write "
            "anyway with `tuneloop routes set --force` (API: ?force=true)", code="open_canary")
