"""Numbered, add-only schema migrations: one module per migration in this folder, named
`m<version>_<name>.py` with its `apply(con)`, and the list below.

Each migration is applied once, inside one transaction together with its record in
`_migrations` (see `runner`). Never edit or renumber a migration that has shipped: add a new
module and append it to MIGRATIONS. `storage/schema.sql` shows the schema they build.
"""

from __future__ import annotations

from collections.abc import Sequence

from storage.db import Connection
from storage.migrations import (
    m001_interactions,
    m002_routes,
    m003_api_keys,
    m010_reviews,
    m011_interaction_tags,
    m012_feedback,
    m013_search_index,
    m020_datasets,
    m021_finetune_jobs,
    m022_finetune_job_events,
    m025_route_history_detail,
    m026_eval_runs,
    m027_cycle_runs,
    m028_cycle_leases,
    m029_usage_estimated,
    m030_source_id,
    m031_review_claims,
    m032_untrainable,
    m035_search_fields,
    m039_search_postgres,
    m040_forgotten_users,
    m041_postgres_filter_indexes,
    m042_prompt_templates,
    m043_job_training_cost,
    m044_sent_request,
    m045_route_transforms,
    m046_search_pending,
    m047_key_feedback_relay,
    m048_search_terms_one_index,
    m049_sql_row_cap,
    m050_time_id_index,
    m051_search_vectors,
    m052_stats_index,
    m053_pending_sizes,
    m054_key_rotation,
    m055_pending_keys,
    m056_feedback_index,
)
from storage.migrations.runner import Migration, applied_versions, run

__all__ = ["MIGRATIONS", "Migration", "applied_versions", "migrate"]

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "interactions", m001_interactions.apply),
    Migration(2, "routes", m002_routes.apply),
    Migration(3, "api_keys", m003_api_keys.apply),
    Migration(10, "reviews", m010_reviews.apply),
    Migration(11, "interaction_tags", m011_interaction_tags.apply),
    Migration(12, "feedback", m012_feedback.apply),
    Migration(13, "search_index", m013_search_index.apply),
    Migration(20, "datasets", m020_datasets.apply),
    Migration(21, "finetune_jobs", m021_finetune_jobs.apply),
    Migration(22, "finetune_job_events", m022_finetune_job_events.apply),
    Migration(25, "route_history_detail", m025_route_history_detail.apply),
    Migration(26, "eval_runs", m026_eval_runs.apply),
    Migration(27, "cycle_runs", m027_cycle_runs.apply),
    Migration(28, "cycle_leases", m028_cycle_leases.apply),
    Migration(29, "usage_estimated", m029_usage_estimated.apply),
    Migration(30, "source_id", m030_source_id.apply),
    Migration(31, "review_claims", m031_review_claims.apply),
    Migration(32, "untrainable", m032_untrainable.apply),
    Migration(35, "search_fields", m035_search_fields.apply),
    Migration(39, "search_postgres", m039_search_postgres.apply),
    Migration(40, "forgotten_users", m040_forgotten_users.apply),
    Migration(41, "postgres_filter_indexes", m041_postgres_filter_indexes.apply),
    Migration(42, "prompt_templates", m042_prompt_templates.apply),
    Migration(43, "job_training_cost", m043_job_training_cost.apply),
    Migration(44, "sent_request", m044_sent_request.apply),
    Migration(45, "route_transforms", m045_route_transforms.apply),
    Migration(46, "search_pending", m046_search_pending.apply),
    Migration(47, "key_feedback_relay", m047_key_feedback_relay.apply),
    Migration(48, "search_terms_one_index", m048_search_terms_one_index.apply),
    Migration(49, "sql_row_cap", m049_sql_row_cap.apply),
    Migration(50, "time_id_index", m050_time_id_index.apply),
    Migration(51, "search_vectors", m051_search_vectors.apply),
    Migration(52, "stats_index", m052_stats_index.apply),
    Migration(53, "pending_sizes", m053_pending_sizes.apply),
    Migration(54, "key_rotation", m054_key_rotation.apply),
    Migration(55, "pending_keys", m055_pending_keys.apply),
    Migration(56, "feedback_index", m056_feedback_index.apply),
)


def migrate(con: Connection, *, up_to: int | None = None,
            migrations: Sequence[Migration] | None = None) -> list[int]:
    """Apply every migration not yet applied (up to `up_to`, for upgrade tests) of
    `migrations` (None: MIGRATIONS; a test's own list, e.g. one more that fails)."""
    return run(con, MIGRATIONS if migrations is None else migrations, up_to=up_to)
