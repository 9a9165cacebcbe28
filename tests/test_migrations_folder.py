"""The numbered migrations live in one folder, one module each, and all are in the list."""

from __future__ import annotations

import pkgutil

import storage.migrations
from storage.migrations import MIGRATIONS


def test_every_migration_module_is_listed_once_under_its_number_and_name() -> None:
    modules = {m.name for m in pkgutil.iter_modules(storage.migrations.__path__)
               if m.name.startswith("m") and m.name[1:4].isdigit()}
    listed = [f"m{m.version:03d}_{m.name}" for m in MIGRATIONS]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(modules), (
        "each storage/migrations/m<NNN>_<name>.py must be in MIGRATIONS, and each entry of "
        "MIGRATIONS must be a module of that name")
    for migration, name in zip(MIGRATIONS, listed, strict=True):
        assert migration.apply.__module__ == f"storage.migrations.{name}"
