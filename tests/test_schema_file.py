"""storage/schema.sql is the schema every migration builds, generated and kept current."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from storage import migrations, schema
from storage.db import connect
from storage.migrations import MIGRATIONS, Migration
from storage.schema import COMMAND, SCHEMA_FILES, SchemaFile, duckdb_schema, render_duckdb


@pytest.mark.parametrize("file", SCHEMA_FILES, ids=lambda f: f.backend)
def test_the_schema_file_is_current(file: SchemaFile) -> None:
    assert file.path.exists(), f"{file.path} is missing: run `{COMMAND}`"
    assert file.path.read_text(encoding="utf-8") == file.generate(), (
        f"{file.path} is stale (a migration changed the schema): run `{COMMAND}` and commit it")


def test_the_duckdb_schema_file_builds_the_same_schema(tmp_path: Path) -> None:
    """Executed on an empty database, the file gives back itself: it is valid and complete."""
    con = connect(tmp_path / "from_file.duckdb")
    con.execute(SCHEMA_FILES[0].path.read_text(encoding="utf-8"))
    assert render_duckdb(con) == duckdb_schema()
    con.close()


def test_a_new_migration_makes_the_file_stale_and_the_check_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    current = tmp_path / "schema.sql"
    current.write_text(duckdb_schema(), encoding="utf-8")
    file = SchemaFile("duckdb", current, duckdb_schema)
    assert schema.stale([file]) == [] and schema.main(["--check"], (file,)) == 0

    def add_column(con: migrations.Connection) -> None:
        con.execute("ALTER TABLE feedback ADD COLUMN weight DOUBLE DEFAULT 1.0")

    newer = (*MIGRATIONS, Migration(999, "weight", add_column))
    file = SchemaFile("duckdb", current, lambda: duckdb_schema(newer))
    assert schema.stale([file]) == [file]
    assert schema.main(["--check"], (file,)) == 1
    assert f"is stale: run `{COMMAND}`" in capsys.readouterr().err
    assert schema.main([], (file,)) == 0
    assert "weight DOUBLE DEFAULT 1.0" in current.read_text(encoding="utf-8")
    assert schema.stale([file]) == []


def test_the_postgres_schema_file_is_current(pg_url_factory: Any) -> None:
    generated = schema.postgres_schema(pg_url_factory())
    assert schema.POSTGRES_FILE.exists(), (
        f"{schema.POSTGRES_FILE} is missing: run `{COMMAND} --pg-url <empty database>`")
    assert schema.POSTGRES_FILE.read_text(encoding="utf-8") == generated, (
        f"{schema.POSTGRES_FILE} is stale: run `{COMMAND} --pg-url <an empty database>`")


def test_the_postgres_schema_file_builds_the_same_schema(pg_url_factory: Any) -> None:
    """Executed on an empty Postgres database, the file gives back the same schema."""
    import psycopg

    url = pg_url_factory()
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(schema.POSTGRES_FILE.read_text(encoding="utf-8").encode())
    assert schema.render_postgres(url) == schema.postgres_schema(pg_url_factory())
