"""What `tuneloop routes set FILE` refuses before it writes (unless --force): the table
replaces every alias, so a FILE leaving an alias out would delete it, and a FILE written from
an older `routes show` would silently put an alias back to a route it had before (undoing a
promotion or rollback made since: the server's `expect_seq` guard only knows what the caller
read when given `--expect-seq`)."""

from __future__ import annotations

from typing import Any

from tuneloop.client import AdminClient
from tuneloop.errors import Conflict


def refuse_left_out(current: dict[str, Any], table: dict[str, Any]) -> None:
    left_out = sorted(current.keys() - table.keys())
    if left_out:
        raise Conflict(f"FILE leaves out {', '.join(map(repr, left_out))}, which have routes: "
                       "`routes set` replaces the whole table, so they would be deleted. Add "
                       "them to FILE (`tuneloop routes show`), or delete them with --force",
                       code="aliases_left_out")


def refuse_reverts(client: AdminClient, current: dict[str, Any], table: dict[str, Any]) -> None:
    """Conflict when FILE sets an alias back to a route it had before its current one (a
    stale copy of the table), naming the changes it would undo."""
    for alias in sorted(a for a in table if a in current and table[a] != current[a]):
        history = client.route_history(alias)  # newest first
        earlier = next((h for h in history[1:] if h.get("spec") == table[alias]), None)
        if earlier is None:
            continue
        undone = "; ".join(f"#{h['seq']} {h['action']} by {h.get('changed_by')} at "
                           f"{h['changed_at']}" for h in reversed(history)
                           if h["seq"] > earlier["seq"])
        raise Conflict(f"FILE sets {alias!r} back to its route of #{earlier['seq']} "
                       f"({earlier['changed_at']}), undoing what came since: {undone}. A "
                       "copy of the table older than those changes? Read it again (`tuneloop "
                       "routes show`); to write it anyway, --force (or --expect-seq N from "
                       "the `routes show` you edited)", code="route_reverted")
