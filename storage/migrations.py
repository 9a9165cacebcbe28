"""Numbered, add-only schema migrations.

Each migration is a function applied once, inside one transaction together with its record in
`_migrations`. Never edit or renumber a migration that has shipped: add a new one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from storage.claims import m031_review_claims
from storage.cycles import m027_cycle_runs, m028_cycle_leases
from storage.datasets import m020_datasets
from storage.db import Connection
from storage.eval_runs import m026_eval_runs
from storage.finetune_jobs import m021_finetune_jobs
from storage.job_events import m022_job_events
from storage.promotions import m025_route_history_detail
from storage.trainable import m032_untrainable

log = logging.getLogger("tuneloop.storage")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Connection], None]


def m001_interactions(con: Connection) -> None:
    con.execute(
        """
        CREATE TABLE interactions (
            id VARCHAR PRIMARY KEY,
            created_at TIMESTAMPTZ NOT NULL,
            endpoint VARCHAR NOT NULL,
            model VARCHAR,
            upstream_model VARCHAR,
            provider VARCHAR,
            route JSON,
            traffic VARCHAR NOT NULL DEFAULT 'production',
            request JSON,
            response JSON,
            status_code INTEGER,
            finish VARCHAR,
            error VARCHAR,
            latency_ms DOUBLE,
            ttfb_ms DOUBLE,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            cost_usd DOUBLE,
            stream BOOLEAN,
            tags VARCHAR[],
            user_id VARCHAR,
            session_id VARCHAR,
            metadata JSON
        )
        """
    )


def m002_routes(con: Connection) -> None:
    con.execute(
        """
        CREATE TABLE routes (
            alias VARCHAR PRIMARY KEY,
            spec JSON NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            updated_by VARCHAR
        )
        """
    )
    con.execute("CREATE SEQUENCE route_history_seq START 1")
    con.execute(
        """
        CREATE TABLE route_history (
            seq BIGINT PRIMARY KEY DEFAULT nextval('route_history_seq'),
            alias VARCHAR NOT NULL,
            spec JSON,
            action VARCHAR NOT NULL,
            changed_at TIMESTAMPTZ NOT NULL,
            changed_by VARCHAR
        )
        """
    )


def m003_api_keys(con: Connection) -> None:
    con.execute(
        """
        CREATE TABLE api_keys (
            id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL,
            key_hash VARCHAR NOT NULL UNIQUE,
            prefix VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            revoked_at TIMESTAMPTZ
        )
        """
    )


def m010_reviews(con: Connection) -> None:
    # The current review state of an interaction (no row: pending, revision 0). The
    # interaction's creation time, model and logged tags (all immutable) are copied here so
    # stats need no join over every interaction.
    con.execute(
        """
        CREATE TABLE reviews (
            interaction_id VARCHAR PRIMARY KEY,
            state VARCHAR NOT NULL,
            revision INTEGER NOT NULL,
            messages JSON,
            reviewer VARCHAR NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            interaction_created_at TIMESTAMPTZ,
            model VARCHAR,
            logged_tags VARCHAR[]
        )
        """
    )
    # Every review action, never changed: messages NULL means the original message list.
    con.execute(
        """
        CREATE TABLE review_revisions (
            interaction_id VARCHAR NOT NULL,
            revision INTEGER NOT NULL,
            action VARCHAR NOT NULL,
            state VARCHAR NOT NULL,
            messages JSON,
            reason VARCHAR,
            reviewer VARCHAR NOT NULL,
            role VARCHAR,
            restores INTEGER,
            created_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (interaction_id, revision)
        )
        """
    )


def m011_interaction_tags(con: Connection) -> None:
    # Tags reviewers add to (removed = false) or take off (removed = true) an interaction; the
    # interaction's own tags column is never changed. `logged` (the tag is among the logged
    # ones), `reviewable` and the creation time are copied facts, for stats without joins.
    con.execute(
        """
        CREATE TABLE interaction_tags (
            interaction_id VARCHAR NOT NULL,
            tag VARCHAR NOT NULL,
            removed BOOLEAN NOT NULL,
            logged BOOLEAN NOT NULL,
            reviewable BOOLEAN NOT NULL,
            interaction_created_at TIMESTAMPTZ,
            updated_at TIMESTAMPTZ NOT NULL,
            updated_by VARCHAR,
            PRIMARY KEY (interaction_id, tag)
        )
        """
    )


def m012_feedback(con: Connection) -> None:
    con.execute(
        """
        CREATE TABLE feedback (
            id VARCHAR PRIMARY KEY,
            interaction_id VARCHAR NOT NULL,
            score DOUBLE NOT NULL,
            comment VARCHAR,
            source VARCHAR,
            created_at TIMESTAMPTZ NOT NULL
        )
        """
    )


def m013_search_index(con: Connection) -> None:
    # its backfill is gone: migration 35 rebuilds the index (the terms and tables changed)
    con.execute("CREATE TABLE search_docs (interaction_id VARCHAR PRIMARY KEY, "
                "term_keys BIGINT[] NOT NULL)")
    con.execute("CREATE TABLE search_terms (term_key BIGINT NOT NULL, "
                "interaction_id VARCHAR NOT NULL)")


def m029_usage_estimated(con: Connection) -> None:
    """True when tokens and cost were estimated at ingest (a stream without reported usage)."""
    con.execute("ALTER TABLE interactions ADD COLUMN usage_estimated BOOLEAN")


def m030_source_id(con: Connection) -> None:
    """The interaction a request was made from (`x-tuneloop-source`: evaluation replays)."""
    con.execute("ALTER TABLE interactions ADD COLUMN source_id VARCHAR")


def m035_search_fields(con: Connection) -> None:
    """The search index by field (system / user / answer), with normalized, stemmed and
    character-gram terms and the words for prefix search: built anew for every interaction
    (see storage.search_index), in chunks."""
    from storage.search_index import backfill

    con.execute("DROP TABLE search_terms")
    con.execute("DROP TABLE search_docs")
    con.execute("CREATE TABLE search_docs (interaction_id VARCHAR PRIMARY KEY, "
                "term_keys BIGINT[] NOT NULL, term_fields UTINYINT[] NOT NULL)")
    con.execute("CREATE TABLE search_terms (term_key BIGINT NOT NULL, "
                "interaction_id VARCHAR NOT NULL, fields UTINYINT NOT NULL)")
    con.execute("CREATE TABLE search_words (word VARCHAR PRIMARY KEY, term_key BIGINT NOT NULL, "
                "interaction_id VARCHAR NOT NULL)")
    backfill(con)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "interactions", m001_interactions),
    Migration(2, "routes", m002_routes),
    Migration(3, "api_keys", m003_api_keys),
    Migration(10, "reviews", m010_reviews),
    Migration(11, "interaction_tags", m011_interaction_tags),
    Migration(12, "feedback", m012_feedback),
    Migration(13, "search_index", m013_search_index),
    Migration(20, "datasets", m020_datasets),
    Migration(21, "finetune_jobs", m021_finetune_jobs),
    Migration(22, "finetune_job_events", m022_job_events),
    Migration(25, "route_history_detail", m025_route_history_detail),
    Migration(26, "eval_runs", m026_eval_runs),
    Migration(27, "cycle_runs", m027_cycle_runs),
    Migration(28, "cycle_leases", m028_cycle_leases),
    Migration(29, "usage_estimated", m029_usage_estimated),
    Migration(30, "source_id", m030_source_id),
    Migration(31, "review_claims", m031_review_claims),
    Migration(32, "untrainable", m032_untrainable),
    Migration(35, "search_fields", m035_search_fields),
)


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


def migrate(con: Connection, *, up_to: int | None = None) -> list[int]:
    """Apply every migration not yet applied (up to `up_to`, for upgrade tests)."""
    versions = [m.version for m in MIGRATIONS]
    if versions != sorted(set(versions)):
        raise RuntimeError("migration versions must be unique and increasing")
    done = applied_versions(con)
    newly: list[int] = []
    for migration in MIGRATIONS:
        if migration.version in done or (up_to is not None and migration.version > up_to):
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            migration.apply(con)
            con.execute(
                "INSERT INTO _migrations VALUES (?, ?, ?)",
                [migration.version, migration.name, datetime.now(UTC)],
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        log.info("applied migration %03d %s", migration.version, migration.name)
        newly.append(migration.version)
    return newly
