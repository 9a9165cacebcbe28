"""What each route target served and what it was trained at: the inputs of `tuneloop savings`.

A request counts for the target that answered it (`route.target`: a fallback's answer is the
fallback's tokens), on production traffic only, when the upstream reported (or ingest
estimated) both its prompt and completion tokens. Each row also has its first and last
request's time (a target's live span: a canary started yesterday served one day, not the
window's 30) and the prompt tokens the provider read from its prompt cache
(`usage.prompt_tokens_details.cached_tokens`, or `input_tokens_details` of a response; at most
the prompt tokens), priced at the cached rate. The time filter is on `created_at` alone:
DuckDB skips row groups by their min/max statistics and Postgres has an index on it
(migration 41), so a window of days reads those days, not the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from storage.backend.dialect import dialect_of
from storage.db import Connection

DAY_US = 86_400_000_000

_USAGE_SQL = """
SELECT route ->> 'alias' AS alias, route ->> 'target' AS target, {day} AS day,
       count(*) AS requests, sum(prompt_tokens) AS prompt, sum(completion_tokens) AS completion,
       sum(least({cached}, prompt_tokens)) AS cached, min({at}) AS first_us, max({at}) AS last_us
FROM interactions
WHERE created_at >= ? AND created_at < ? AND traffic = 'production' AND route IS NOT NULL
  AND prompt_tokens IS NOT NULL AND completion_tokens IS NOT NULL{alias}
GROUP BY 1, 2, 3
ORDER BY 1, 3, 2
"""


def _day(day_number: int) -> str:
    return datetime.fromtimestamp(day_number * 86_400, UTC).strftime("%Y-%m-%d")


def _cached_sql(con: Connection) -> str:
    d = dialect_of(con)
    if d.name == "postgres":
        # a `json` column is text, and each JSON path function parses all of it again (4x
        # slower reads at 1M rows): a pattern over the text finds the one key instead. Inside
        # a string value the quotes are escaped (`\"cached_tokens\":`), so answer text cannot
        # pose as the count.
        return ("coalesce(CAST(substring(CAST(response AS TEXT) FROM "
                "'\"cached_tokens\":\\s*([0-9]{1,9})') AS BIGINT), 0)")
    chat = d.try_integer(d.json_text_at("response", ("usage", "prompt_tokens_details",
                                                     "cached_tokens")))
    responses = d.try_integer(d.json_text_at("response", ("usage", "input_tokens_details",
                                                          "cached_tokens")))
    return f"greatest(coalesce({chat}, {responses}, 0), 0)"


def _time(us: int | None) -> str | None:
    return None if us is None else datetime.fromtimestamp(us / 1e6, UTC).isoformat()


def target_usage(con: Connection, since: datetime, until: datetime, *,
                 alias: str | None = None, by_day: bool = True) -> list[dict[str, Any]]:
    """Rows of {alias, target, day (YYYY-MM-DD, or None when not by day), requests,
    prompt_tokens, completion_tokens, cached_tokens (token sums), first_at, last_at (ISO
    times of the first and last request)} for production traffic in [since, until), of one
    alias or of every alias."""
    d = dialect_of(con)
    at = d.epoch_us("created_at")
    day = d.int_div(at, str(DAY_US)) if by_day else "0"
    sql = _USAGE_SQL.format(day=day, cached=_cached_sql(con), at=at,
                            alias="" if alias is None else " AND route ->> 'alias' = ?")
    params: list[Any] = [since, until] + ([] if alias is None else [alias])
    return [
        {"alias": row_alias, "target": target, "day": _day(day_no) if by_day else None,
         "requests": int(requests), "prompt_tokens": int(prompt or 0),
         "completion_tokens": int(completion or 0), "cached_tokens": int(cached or 0),
         "first_at": _time(first_us), "last_at": _time(last_us)}
        for row_alias, target, day_no, requests, prompt, completion, cached, first_us, last_us
        in con.execute(sql, params).fetchall()
        if target is not None
    ]


def training_of(con: Connection, models: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The latest succeeded job that produced each of these fine-tuned models: {model: {job_id,
    base_model, trained_tokens, training_cost_usd}}. Models no job recorded are absent."""
    if not models:
        return {}
    rows = con.execute(
        "SELECT fine_tuned_model, id, base_model, trained_tokens, training_cost_usd "
        "FROM finetune_jobs WHERE fine_tuned_model = ANY(?) AND status = 'succeeded' "
        "ORDER BY coalesce(finished_at, updated_at), id", [list(models)]).fetchall()
    found: dict[str, dict[str, Any]] = {}
    for model, job_id, base, tokens, cost in rows:  # the latest wins
        found[model] = {"job_id": job_id, "base_model": base, "trained_tokens": tokens,
                        "training_cost_usd": cost}
    return found
