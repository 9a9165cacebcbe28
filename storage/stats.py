"""Review statistics: counts by state over time, by model and tag, token lengths, throughput.

No query joins every interaction with the review tables: totals come from the interactions'
own columns (Postgres: one pass over an index of them; DuckDB: a scan of the columns of each
count), per-state counts from the (small) reviews table, which carries the interaction's
creation time, model and logged tags, and tag changes from `interaction_tags`, which
carries whether the tag was logged. Pending is what is left.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from storage.backend.dialect import dialect_of
from storage.db import Connection
from storage.messages import REVIEWABLE_ENDPOINTS
from storage.migrations.m052_stats_index import FITS as STATS_FITS
from storage.review import STATES

_REVIEWABLE = ", ".join(f"'{e}'" for e in REVIEWABLE_ENDPOINTS)
TOP_TAGS = 30
TOP_MODELS = 30
"""`by_model` answers the models with the most interactions, then one row (`model` None,
`models`: how many) summing the others: clients choose the model names, and 14,584 distinct
ones made the answer 1.7 MB and 6 s (review r12y LOW 6)."""
_DAY_US = 86_400_000_000
REVIEWED = [s for s in STATES if s != "pending"]


def _range(column: str, since: datetime | None, until: datetime | None) -> tuple[str, list[Any]]:
    clauses, params = ["TRUE"], []
    if since is not None:
        clauses.append(f"{column} >= ?")
        params.append(since)
    if until is not None:
        clauses.append(f"{column} < ?")
        params.append(until)
    return " AND ".join(clauses), params


def _by_state(totals: dict[Any, int], reviewed: list[tuple[Any, str, int]],
              key_name: str) -> list[dict[str, Any]]:
    """Rows of {key, pending, approved, rejected, needs_work, total}."""
    counts: dict[Any, dict[str, int]] = defaultdict(lambda: dict.fromkeys(REVIEWED, 0))
    for key, state, count in reviewed:
        if state in REVIEWED:  # an item undone back to pending is counted in the total only
            counts[key][state] += count
    rows = []
    for key in set(totals) | set(counts):
        row, total = counts[key], totals.get(key, 0)
        rows.append({key_name: key, "pending": max(0, total - sum(row.values())), **row,
                     "total": max(total, sum(row.values()))})
    return rows


def _day(day_number: int) -> str:
    return datetime.fromtimestamp(day_number * 86_400, UTC).strftime("%Y-%m-%d")


def review_stats(con: Connection, since: datetime | None = None,
                 until: datetime | None = None, top_models: int = TOP_MODELS) -> dict[str, Any]:
    i_where, i_params = _range("created_at", since, until)
    r_where, r_params = _range("interaction_created_at", since, until)
    counts = _interaction_counts(con, i_where, i_params, top_models=top_models)

    def reviewed(r_key: str, where: str = "TRUE", params: Sequence[Any] = ()
                 ) -> list[tuple[Any, str, int]]:
        return [(k, s, c) for k, s, c in con.execute(
            f"SELECT {r_key} AS k, state, count(*) FROM reviews "
            f"WHERE {r_where} AND {where} GROUP BY k, state", [*r_params, *params]).fetchall()]

    d = dialect_of(con)
    by_day = _by_state(counts.by_day, reviewed(
        d.int_div(d.epoch_us("interaction_created_at"), str(_DAY_US))), "day")
    for row in by_day:
        row["day"] = _day(row["day"])
    everything = reviewed("1")
    by_model = _by_models(counts, everything, reviewed)
    overall = _by_state({1: counts.reviewable} if counts.reviewable else {}, everything, "all")
    totals = overall[0] if overall else {"pending": 0, **dict.fromkeys(REVIEWED, 0), "total": 0}
    totals.pop("all", None)
    return {
        "totals": {**totals, "not_reviewable": counts.not_reviewable},
        "by_day": sorted(by_day, key=lambda r: r["day"]),
        "by_model": by_model,
        "by_tag": _by_tag(con, counts.by_tag, since, until),
        "token_histogram": [{"low": low, "high": 64 if low == 0 else low * 2, "count": n}
                            for low, n in sorted(counts.by_tokens.items())],
        "reviewers": _reviewers(con, since, until),
        "feedback": _feedback(con, since, until),
    }


def _by_models(counts: _Counts, everything: list[tuple[Any, str, int]],
               reviewed: Callable[[str, str, Sequence[Any]], list[tuple[Any, str, int]]]
               ) -> list[dict[str, Any]]:
    """The top models' rows, most interactions first, then the others' one row: what is left
    of the range's totals (reviews of a model counted apart from its interactions' model
    fall there too), so the rows still add up to `totals`."""
    top = list(counts.by_model)
    if not top:
        return []
    capped = counts.models > len(top)
    marks = ", ".join("?" * len(top))
    mine = reviewed("coalesce(model, '')",
                    f"coalesce(model, '') IN ({marks})" if capped else "TRUE",
                    top if capped else [])
    rows = sorted(_by_state(counts.by_model, mine, "model"),
                  key=lambda r: (-r["total"], r["model"]))
    if not capped:
        return rows
    left = dict.fromkeys(REVIEWED, 0)
    for _, state, n in everything:
        if state in left:
            left[state] += n
    for _, state, n in mine:
        if state in left:
            left[state] -= n
    others = _by_state({None: max(0, counts.reviewable - sum(counts.by_model.values()))},
                       [(None, state, max(0, n)) for state, n in left.items()], "model")
    return [*rows, {**others[0], "models": counts.models - len(top)}]


@dataclass
class _Counts:
    """The interactions of a range counted every way the page shows them (`by_model`: the
    top models only; `models`: how many there are)."""
    reviewable: int = 0
    not_reviewable: int = 0
    by_day: dict[int, int] = field(default_factory=dict)
    by_model: dict[str, int] = field(default_factory=dict)
    models: int = 0
    by_tokens: dict[int, int] = field(default_factory=dict)  # low end of the bucket: count
    by_tag: dict[str, int] = field(default_factory=dict)


def _keys(con: Connection) -> tuple[str, str]:
    """The day number and the token bucket's low end of a row: power-of-two buckets of
    prompt + completion tokens, [0, 64), [64, 128), ..."""
    d = dialect_of(con)
    tokens = "(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0))"
    # epoch arithmetic: date_trunc on TIMESTAMPTZ costs ~7x more over a million rows
    return (d.epoch_day("created_at"),
            f"CASE WHEN {tokens} < 64 THEN 0 "
            f"ELSE CAST(pow(2, floor({d.log2(tokens)})) AS BIGINT) END")


def _interaction_counts(con: Connection, i_where: str, i_params: list[Any], *,
                        one_pass: bool | None = None, top_models: int = TOP_MODELS) -> _Counts:
    """Postgres counts in one pass over its stats index (migration 52), DuckDB with a scan
    per count (by default: the store's dialect says which). DuckDB reads only the columns a
    query names, and six such scans took 49 ms at 300k rows where one GROUPING SETS pass
    took 119; Postgres reads whole rows, and six scans of the table took 11-14 s at 1M."""
    if one_pass if one_pass is not None else dialect_of(con).stats_index:
        return _one_pass(con, i_where, i_params, top_models)
    day, low = _keys(con)
    reviewable = f"{i_where} AND endpoint IN ({_REVIEWABLE})"

    def grouped(key: str, where: str = reviewable) -> dict[Any, int]:
        return dict(con.execute(f"SELECT {key} AS k, count(*) FROM interactions "
                                f"WHERE {where} GROUP BY k", i_params).fetchall())

    models = con.execute(
        f"SELECT k, n, count(*) OVER () FROM (SELECT coalesce(model, '') AS k, count(*) AS n "
        f"FROM interactions WHERE {reviewable} GROUP BY k) AS per_model "
        "ORDER BY n DESC, k LIMIT ?", [*i_params, top_models]).fetchall()
    return _Counts(
        reviewable=grouped("1").get(1, 0),
        not_reviewable=grouped("1", f"{i_where} AND endpoint NOT IN ({_REVIEWABLE})").get(1, 0),
        by_day=grouped(day), by_model={k: n for k, n, _ in models},
        models=models[0][2] if models else 0, by_tokens=grouped(low),
        by_tag=dict(con.execute(
            f"SELECT tag, count(*) FROM (SELECT unnest(tags) AS tag FROM interactions "
            f"WHERE {reviewable} AND {dialect_of(con).list_length('tags')} > 0) AS logged "
            "GROUP BY tag", i_params).fetchall()))


def _one_pass(con: Connection, i_where: str, i_params: list[Any],
              top_models: int = TOP_MODELS) -> _Counts:
    """One pass over the range's interactions, GROUPING SETS over its groups. Tags are grouped
    by the whole logged list, few distinct ones, and counted per tag here: each element as
    `unnest` would give it. On Postgres the pass is an index-only scan of the rows that fit
    its stats index, plus the rare others by time (migration 52): each row is in exactly one
    of the two."""
    day, low = _keys(con)
    facts = (f"SELECT endpoint IN ({_REVIEWABLE}) AS ok, {day} AS k_day, "
             f"coalesce(model, '') AS k_model, {low} AS k_low, tags AS k_tags "
             f"FROM interactions WHERE {i_where}")
    params = i_params
    if dialect_of(con).stats_index:
        facts = f"{facts} AND {STATS_FITS} UNION ALL {facts} AND NOT {STATS_FITS}"
        params = [*i_params, *i_params]
    # each row counted once by all five keys, then the sets summed from those few groups:
    # 2.5-2.9 s against 3.7-5.2 s for GROUPING SETS over the rows themselves (1M rows,
    # Postgres at a load of ~22); of the models only the top ones leave the database
    rows = con.execute(
        f"""
        SELECT unused, ok, k_day, k_model, k_low, k_tags, n, models FROM (
            SELECT sets.*,
                   row_number() OVER (PARTITION BY unused, ok ORDER BY n DESC, k_model) AS nth,
                   count(*) OVER (PARTITION BY unused, ok) AS models
            FROM (SELECT GROUPING(k_day, k_model, k_low, k_tags) AS unused, ok, k_day, k_model,
                         k_low, k_tags, CAST(sum(n) AS BIGINT) AS n
                  FROM (SELECT ok, k_day, k_model, k_low, k_tags, count(*) AS n
                        FROM ({facts}) AS facts
                        GROUP BY ok, k_day, k_model, k_low, k_tags) AS groups
                  GROUP BY GROUPING SETS ((ok), (ok, k_day), (ok, k_model), (ok, k_low),
                                          (ok, k_tags))) AS sets) AS ranked
        WHERE unused = 15 OR (ok AND (unused <> 11 OR nth <= ?))
        """, [*params, top_models]).fetchall()
    counts = _Counts()
    for unused, ok, k_day, k_model, k_low, k_tags, n, models in rows:
        if unused == 0b1111:
            if ok:
                counts.reviewable += n
            else:
                counts.not_reviewable += n
        elif not ok:
            continue
        elif unused == 0b0111:
            counts.by_day[k_day] = n
        elif unused == 0b1011:
            counts.by_model[k_model] = n
            counts.models = models
        elif unused == 0b1101:
            counts.by_tokens[k_low] = n
        else:
            for tag in k_tags or ():
                counts.by_tag[tag] = counts.by_tag.get(tag, 0) + n
    return counts


def _by_tag(con: Connection, logged: dict[str, int], since: datetime | None,
            until: datetime | None) -> list[dict[str, Any]]:
    d = dialect_of(con)
    totals = dict(logged)
    r_where, r_params = _range("interaction_created_at", since, until)
    reviewed: dict[tuple[str, str], int] = defaultdict(int)
    for tag, state, count in con.execute(
        f"SELECT tag, state, count(*) FROM (SELECT unnest(logged_tags) AS tag, state "
        f"FROM reviews WHERE {r_where} AND {d.list_length('logged_tags')} > 0) AS reviewed "
        "GROUP BY tag, state", r_params
    ).fetchall():
        reviewed[tag, state] += count
    t_where, t_params = _range("t.interaction_created_at", since, until)
    # a reviewer's tag counts where it changes the logged ones: added (+1) or removed (-1)
    for tag, state, delta in con.execute(
        f"SELECT t.tag, coalesce(r.state, 'pending'), "
        f"sum(CASE WHEN t.removed THEN -1 ELSE 1 END) FROM interaction_tags t "
        f"LEFT JOIN reviews r ON r.interaction_id = t.interaction_id "
        f"WHERE {t_where} AND t.reviewable AND t.removed = t.logged "
        "GROUP BY t.tag, coalesce(r.state, 'pending')", t_params
    ).fetchall():
        totals[tag] = totals.get(tag, 0) + int(delta)
        reviewed[tag, state] += int(delta)
    rows = _by_state(totals, [(tag, state, n) for (tag, state), n in reviewed.items()], "tag")
    rows = [r for r in rows if r["total"] > 0]
    return sorted(rows, key=lambda r: (-r["total"], r["tag"]))[:TOP_TAGS]


def _reviewers(con: Connection, since: datetime | None,
               until: datetime | None) -> list[dict[str, Any]]:
    d = dialect_of(con)
    where, params = _range("created_at", since, until)
    day = d.int_div(d.epoch_us("created_at"), str(_DAY_US))
    rows = con.execute(
        f"SELECT reviewer, {day} AS day, action, count(*) "
        f"FROM review_revisions WHERE {where} GROUP BY reviewer, {day}, action "
        "ORDER BY day, reviewer, action", params).fetchall()
    return [{"reviewer": r, "day": _day(n), "action": a, "count": c} for r, n, a, c in rows]


def _feedback(con: Connection, since: datetime | None, until: datetime | None) -> dict[str, Any]:
    where, params = _range("created_at", since, until)
    count, mean, positive, negative = con.execute(
        f"SELECT count(*), avg(score), count(*) FILTER (WHERE score > 0), "
        "count(*) FILTER (WHERE score < 0) "
        f"FROM feedback WHERE {where}", params).fetchall()[0]
    return {"count": count, "mean_score": mean, "positive": positive, "negative": negative}
