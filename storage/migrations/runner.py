"""Applying migrations: each one once, in one transaction together with its record in
`_migrations`, in version order. The list of migrations is `storage.migrations.MIGRATIONS`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from storage.db import Connection
from storage.transaction import transaction

log = logging.getLogger("tuneloop.storage")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Connection], None]


def applied_versions(con: Connection) -> set[int]:
    con.execute(
        """
        CREATE TABLE IF NOT EXISTS _migrations (
            version INTEGER PRIMARY KEY,
            name VARCHAR NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL
        )
        """
    )
    return {row[0] for row in con.execute("SELECT version FROM _migrations").fetchall()}


def run(con: Connection, migrations: Sequence[Migration], *,
        up_to: int | None = None) -> list[int]:
    """Apply every migration of `migrations` not yet applied (up to `up_to`)."""
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise RuntimeError("migration versions must be unique and increasing")
    done = applied_versions(con)
    newly: list[int] = []
    for migration in migrations:
        if migration.version in done or (up_to is not None and migration.version > up_to):
            continue
        with transaction(con):
            migration.apply(con)
            con.execute(
                "INSERT INTO _migrations VALUES (?, ?, ?)",
                [migration.version, migration.name, datetime.now(UTC)],
            )
        log.info("applied migration %03d %s", migration.version, migration.name)
        newly.append(migration.version)
    return newly
