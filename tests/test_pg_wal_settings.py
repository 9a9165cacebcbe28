"""The Postgres of docker-compose.yml runs the WAL settings the README recommends and the
ingest bench measures with (`bench.pg_ingest.PRODUCTION_WAL`), and none that gives up
durability: what is measured is what is deployed."""

from __future__ import annotations

from pathlib import Path

import yaml

from bench.pg_ingest import DURABLE, PRODUCTION_WAL

ROOT = Path(__file__).resolve().parents[1]


def _compose_settings() -> dict[str, str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = compose["services"]["postgres"]["command"]
    assert command[0] == "postgres"
    flags, values = command[1::2], command[2::2]
    assert set(flags) == {"-c"} and len(flags) == len(values)
    return dict(value.split("=", 1) for value in values)


def test_compose_postgres_runs_the_benched_wal_settings() -> None:
    assert _compose_settings() == PRODUCTION_WAL


def test_benched_settings_keep_durability() -> None:
    assert DURABLE == {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
    assert not set(PRODUCTION_WAL) & {"fsync", "synchronous_commit", "full_page_writes",
                                       "wal_level", "commit_delay"}
    assert not set(_compose_settings()) & set(DURABLE)


def test_readme_recommends_the_benched_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, value in PRODUCTION_WAL.items():
        assert f"{name}={value}" in readme, name
