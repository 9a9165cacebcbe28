"""Canary health: how each target of an alias did on production traffic since a time.

A request counts for the target the route drew for it (`route.primary`, or `route.target`
for rows logged before the proxy recorded the primary). It is an error when the upstream
answered 5xx, timed out, cut the answer, ended a 200 stream with an error event or stalled
(`route.stalled_s`: the client hung up after the upstream was silent `upstream_stall_s`), or
when the drawn target failed and another served it (`route.attempt > 0`). While a canary is
open each arm's failure (4xx, 5xx, timeout) gets a second opinion from the other
(proxy/second_opinion.py), so a canary refusing or failing what the stable model answers errs,
and so does a stable model failing where the canary answers. When the second opinion fails too
(any failure: refused, 5xx, timed out, cut, stalled, or the client left while it was asked),
the request failed on every model: its row carries `second_opinion_status` (or is the second
opinion's own failed row) and is judged for neither arm, whoever finally answered (a
fallback). Such failures may cluster on a few users or be sent on purpose to the arm a client
sees, so they never count. A 4xx with no second opinion counts only on the open canary
(`canary` named; rows from before second opinions). A 401/403 on the operator's key
(`route.refused_key` `operator`: a route's `api_key_env`, the server's key) is the target's
failure like any 4xx. On the client's own key (`client`) it gets a second opinion only when
the other arm would get that same key at the same origin (proxy/second_opinion.py): then it
is judged as above (the other arm answered: the drawn arm's error; refused too: a bad key,
nobody's). Otherwise (`client` at attempt 0 with no `second_opinion_status`, or not recorded:
rows from before it) it says nothing of either model. A 4xx the proxy answered itself after
it chose the target (its row's `route.answered_by` is `proxy`, proxy/exchange.py) never
counts; the proxy's checks before routing (keys, body size, JSON) log no routed row at all.
The requests that do not count are not judged at all: they are `unjudged_requests`, left out
of `requests` and the weighed trials, so failing requests sent to one arm cannot dilute its
error rate either. Neither is a
request the client hung up on quicker than a stall (`finish` `client_disconnected`, whatever
the status: an unfinished stream is no success): a user's cancel says nothing either way.
A row with `route.late_opinion` (proxy/background_opinion.py: a second opinion cut by
`second_opinion_timeout_s` or by the client's hang-up went on in the background, or the
client hung up before its answer's first byte and the other arm was asked) is judged by that
opinion's own row (traffic `probe`, `source_id` this row's id) alone: the other arm's answer
started (`status_code` < 400, `finish` `completed`) -> the drawn arm's error (whatever the
row's own second opinion status, stall or hang-up); it failed, or no such row exists (pending,
lost, cancelled at shutdown, or `late_opinion` says none was asked: `too_quick`,
`budget_full`, `key_share_full`) -> nobody's, unjudged. Probe rows are no production request
of either arm. Such a row waits on its opinion (`opinions_missing`) while skipped, or asked and
not yet in the store before its `late_due` (its deadline plus the ingest's grace); after it, the
opinion is lost (cancelled at a restart, a crash) and the row is plainly unjudged. An `asked`
row without `late_due` (written before rows carried it) is lost once older than the longest
deadline an opinion could have had (`asked_bound_s`, from the settings' and the route's
timeouts: proxy/admin/promote_api.py), else it would wait for ever (r14c HIGH 1).
`opinions_missing_weighed` counts each client key's (`route.client_key`, a rotated issued
key's under its chain's `stratum`, storage/keys.py `rotate_key`; rows without one are one key)
missing rows at most as many as its judged requests there (a sticky user's at most
`max_requests_per_user` of them), and at most `max_requests_per_user` in all, as its second
opinions are weighed: one key's skipped hang-ups weigh no more than its share of the evidence,
even when it mixes cheap successes in to raise its judged requests (r14d HIGH 1). `by_key`
gives each key's part (`missing`): the canary's strata weigh them so that many keys do not
each add that much (exporter/canary_strata.py, r14e MED 4).
`history_baseline` judges rows by the canary's rule when no canary was open (the current
target's traffic before one, the canary's baseline when starved beside it): a failure no other
model judged is unjudged and counts in `opinions_missing`, like a skipped background opinion.
That is every failure there: an error status or a stall before the first byte (a second opinion
would have judged it during a canary), a failure a fallback answered (`attempt` > 0: during a
canary the other arm is asked first, and if it fails too the row is nobody's, r14c MED 5), and
a stream cut, failed or stalled after its first byte (a client can cause one on purpose: during
a canary it falls on whichever arm was drawn, in the history on the current target alone, r14c
HIGH 2). `opinions_missing_unanswered` counts the first two kinds (no answer started), the only
ones the canary's second opinions tell anything about (below; exporter/canary_history.py).
Without it (the health people read) such a failure is the target's error.
`opinions_answered` / `opinions_failed` (while a canary is open): the target's 5xx or timeouts
(before any answer) whose second opinion answered (the target's error) or failed too (nobody's),
each client key's share of them weighed by its judged requests on that target (its traffic
there, sticky users weighed): one key sending requests that fail everywhere (unjudged) moves
the share by no more than the judged traffic it also sends (r14d MED 5: weighed at 5 each, 20
such requests from one key weighed as much as the app's own 5xx, and an honest canary waited
475 requests, not 125).
Latency is over the answers below 400.
Evaluation and synthetic traffic never count. A request users rated is a thumbs-down when
the mean of its feedback scores is below 0 (`rated_requests`, `thumbs_down`: for people).

The canary's sequential test uses the *votes* instead (`votes`, `down_votes`), which one
client cannot flood: a voter is the API key that sent the feedback (its public prefix; without
issued keys every feedback comes from the one anonymous voter), a voter's latest score on an
interaction is its one vote there (a thumbs-down when below 0), and a voter with more than
`max_votes_per_voter` votes on a target's requests is weighed down to that many (each of its
votes counts `max_votes_per_voter / n`), so counts may be fractional. A key an admin marked
`feedback_relay` (an app backend sending its end users' feedback, storage/keys.py) is not one
voter: each end user of the rated interactions (its user id, else session id, else the
interaction itself) is one voter under that key, each weighing at most `max_votes_per_voter`.

The error test uses `weighed_requests` / `weighed_errors` the same way: the requests of one
sticky user (the route's `draw` was `sticky`: the user or session key chose the target) under
one client key are one cluster, not independent trials (per key: another key sending with the
app's user ids took the app's weight away, review r14m HIGH 1), and a user with more than
`max_requests_per_user` requests on a target is weighed down to that many. So heavy users
whose requests err alike do not pass for many independent observations, and one user id
flooding a target with cheap successes weighs at most that many requests. Requests drawn per
request count one each.

`counted_requests` is what the canary's `min_requests` counts (review r14m MED 3): the judged
requests, a sticky user's (per client key) up to `COUNTED_PER_USER` x `max_requests_per_user`
(20 by default). Weighed as the test weighs them, the canary's count could never pass 5 x the
users drawn onto it, so at a 10% canary a route with fewer than about 200 user ids never
reached 100 and every good canary expired at `max_hours`. Counted this way 5 users that come
back make up the minimum, and still no one heavy user alone (a fifth of it at most).
`sticky_users` (judged, per client key), `weighed_ceiling` and `counted_ceiling` (what the
weighed and counted requests would be were every one of them at its cap: the watch warns when
a canary is stuck at them, exporter/canary_users.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from storage.backend.dialect import dialect_of
from storage.db import Connection
from storage.route_health_keys import HISTORY_PARTS, add_by_key

__all__ = ["COUNTED_PER_USER", "HISTORY_PARTS", "MAX_REQUESTS_PER_USER", "MAX_VOTES_PER_VOTER",
           "RELAY_MARK", "route_health"]

MAX_VOTES_PER_VOTER = 5
"""The default weight of one voter (API key) on one target in the canary's thumbs-down test."""

RELAY_MARK = "+relay"
"""Ends the feedback `source` of a `feedback_relay` key (never in a key's public prefix)."""

MAX_REQUESTS_PER_USER = 5
"""The default weight of one sticky user (or session) on one target in the canary's error test."""

COUNTED_PER_USER = 4
"""`counted_requests` (what the canary's `min_requests` counts) counts a sticky user's judged
requests up to this many times `max_requests_per_user` (module doc)."""

_HEALTH_CTES = """
WITH late AS (
    SELECT source_id,
           max(CASE WHEN status_code < 400 AND finish = 'completed' THEN 1 ELSE 0 END)
               AS answered
    FROM interactions
    WHERE traffic = 'probe' AND created_at >= ?
    GROUP BY source_id
), linked AS (
    SELECT client_key AS linked_key, max(stratum) AS linked_stratum
    FROM api_keys WHERE client_key IS NOT NULL AND stratum IS NOT NULL
    GROUP BY client_key
), q0 AS (
    SELECT id,
           coalesce(route ->> 'primary', route ->> 'target') AS target,
           status_code, finish, latency_ms, route ->> 'answered_by' AS answered_by,
           coalesce({attempt}, 0) AS attempt,
           route ->> 'second_opinion_status' AS second_opinion,
           route ->> 'role' AS role, route ->> 'refused_key' AS refused_key,
           {primary_status} AS primary_status,
           route ->> 'stalled_s' AS stalled, route ->> 'late_opinion' AS late_opinion, ttfb_ms,
           CASE WHEN route ->> 'late_opinion' = 'asked' THEN route ->> 'late_due' END
               AS late_due, created_at < ? AS past_bound,
           coalesce(linked.linked_stratum, route ->> 'client_key') AS client_key,
           coalesce(user_id, session_id) AS end_user, {at_us} AS at_us,
           CASE WHEN coalesce(route ->> 'draw', CASE WHEN coalesce(user_id, session_id) IS NULL
                                                THEN 'random' ELSE 'sticky' END) = 'sticky'
                THEN 'u:' || coalesce(linked.linked_stratum, route ->> 'client_key', '')
                     || ':' || coalesce(user_id, session_id, '')
                ELSE 'r:' || id END AS cluster
    FROM interactions LEFT JOIN linked ON linked.linked_key = route ->> 'client_key'
    WHERE traffic = 'production' AND route ->> 'alias' = ? AND created_at >= ?
      AND created_at < ? AND NOT (created_at >= ? AND created_at < ?)
), q AS (
    SELECT q0.*, coalesce(late.answered, 0) AS late_answered,
           CASE WHEN late.source_id IS NULL THEN 0 ELSE 1 END AS late_seen
    FROM q0 LEFT JOIN late ON late.source_id = q0.id
), r00 AS (
    SELECT *, CASE WHEN late_opinion IS NOT NULL THEN 1 - late_answered
                   WHEN second_opinion IS NOT NULL
                        OR (role = 'second_opinion'
                            AND NOT (status_code < 400 AND finish = 'completed'))
                        OR (status_code IN (401, 403) AND attempt = 0
                            AND coalesce(refused_key, 'client') = 'client')
                   THEN 1 ELSE 0 END AS nobodys
    FROM q
), r0 AS (
    SELECT *, CASE WHEN late_opinion IS NOT NULL THEN late_answered
                   WHEN nobodys = 0
                        AND (status_code >= 500 OR finish IN ('timeout', 'upstream_cut')
                             OR stalled IS NOT NULL
                             OR (status_code < 400 AND finish = 'upstream_error')
                             OR attempt > 0
                             OR (status_code >= 400 AND answered_by IS NULL AND attempt = 0
                                 AND target = CAST(? AS VARCHAR)))
                   THEN 1 ELSE 0 END AS failing
    FROM r00
), r0h AS (
    SELECT *, CASE WHEN CAST(? AS BOOLEAN) AND failing = 1 AND late_opinion IS NULL
                        AND second_opinion IS NULL AND coalesce(role, '') <> 'second_opinion'
                   THEN 1 ELSE 0 END AS unopined,
           CASE WHEN attempt = 0 AND status_code < 400 AND ttfb_ms IS NOT NULL THEN 1 ELSE 0
           END AS started,
           CASE WHEN late_opinion IS NULL AND coalesce(refused_key, '') = ''
                     AND coalesce(primary_status, status_code, 599) >= 500
                THEN CASE WHEN second_opinion IS NOT NULL THEN 2
                          WHEN role = 'second_opinion' AND attempt > 0 AND status_code < 400
                               AND finish = 'completed' THEN 1 END
           END AS opinion
    FROM r0
), r AS (
    SELECT *, failing - unopined AS failed,
           CASE WHEN failing - unopined = 0 AND (nobodys = 1 OR unopined = 1
                                                 OR (status_code BETWEEN 400 AND 499
                                                     AND attempt = 0)
                                                 OR finish = 'client_disconnected')
                   THEN 1 ELSE 0 END AS excused,
           CASE WHEN late_opinion IN ('budget_full', 'key_share_full') OR unopined = 1
                     OR (late_opinion = 'asked' AND late_seen = 0
                         AND NOT (late_due IS NOT NULL
                                  AND CAST(late_due AS DOUBLE PRECISION)
                                      < CAST(? AS DOUBLE PRECISION))
                         AND NOT (late_due IS NULL AND past_bound))
                THEN 1 ELSE 0 END AS missing
    FROM r0h
), rated AS (
    SELECT fb.interaction_id, avg(fb.score) AS mean
    FROM feedback fb JOIN r ON fb.interaction_id = r.id
    GROUP BY fb.interaction_id
), f AS (
    SELECT r.target, count(*) AS n, avg(fb.score) AS mean
    FROM feedback fb JOIN r ON fb.interaction_id = r.id
    GROUP BY r.target
), t AS (
    SELECT r.target, count(*) AS rated, count(*) FILTER (WHERE rated.mean < 0) AS down
    FROM rated JOIN r ON rated.interaction_id = r.id
    GROUP BY r.target
), latest AS (
    SELECT r.target,
           CASE WHEN fb.source LIKE '%{relay}'
                THEN fb.source || ':' || coalesce(r.end_user, 'interaction:' || r.id)
                ELSE coalesce(fb.source, '') END AS voter, fb.score,
           row_number() OVER (PARTITION BY fb.interaction_id, coalesce(fb.source, '')
                              ORDER BY fb.created_at DESC, fb.id DESC) AS nth
    FROM feedback fb JOIN r ON fb.interaction_id = r.id
), voters AS (
    SELECT target, count(*) AS n, count(*) FILTER (WHERE score < 0) AS down
    FROM latest WHERE nth = 1
    GROUP BY target, voter
), v AS (
    SELECT target, sum(n * least(1.0, CAST(? AS DOUBLE PRECISION) / n)) AS votes,
           sum(down * least(1.0, CAST(? AS DOUBLE PRECISION) / n)) AS down_votes
    FROM voters GROUP BY target
), kc AS (
    SELECT target, cluster, coalesce(client_key, '') AS client_key,
           count(*) FILTER (WHERE excused = 0) AS n, sum(failed) AS x, sum(missing) AS m,
           count(*) FILTER (WHERE opinion = 1) AS oa, count(*) FILTER (WHERE opinion = 2) AS ob,
           count(*) AS a
    FROM r GROUP BY target, cluster, coalesce(client_key, '')
), clusters AS (
    SELECT target, cluster, sum(n) AS n, sum(x) AS x
    FROM kc WHERE n > 0 GROUP BY target, cluster
), w AS (
    SELECT target, sum(n * least(1.0, CAST(? AS DOUBLE PRECISION) / n)) AS weighed_requests,
           sum(x * least(1.0, CAST(? AS DOUBLE PRECISION) / n)) AS weighed_errors,
           sum(least(CAST(n AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION)))
               AS counted_requests,
           count(*) FILTER (WHERE cluster LIKE 'u:%') AS sticky_users,
           coalesce(sum(n) FILTER (WHERE cluster NOT LIKE 'u:%'), 0) AS drawn_requests
    FROM clusters GROUP BY target
), keyed AS (
    SELECT target, client_key, sum(m) AS m,
           sum(least(CAST(n AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION))) AS j,
           sum(oa) AS oa, sum(ob) AS ob
    FROM kc GROUP BY target, client_key
), km AS (
    SELECT target, sum(least(m, j, CAST(? AS DOUBLE PRECISION))) AS missing_weighed,
           sum(CASE WHEN oa + ob > 0 THEN j * oa / CAST(oa + ob AS DOUBLE PRECISION) END)
               AS opinions_answered,
           sum(CASE WHEN oa + ob > 0 THEN j * ob / CAST(oa + ob AS DOUBLE PRECISION) END)
               AS opinions_failed
    FROM keyed GROUP BY target
)
"""

_HEALTH_SQL = _HEALTH_CTES + """
SELECT r.target,
       count(*) FILTER (WHERE r.excused = 0) AS requests,
       sum(r.failed) AS errors,
       sum(r.excused) AS unjudged,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY r.latency_ms)
           FILTER (WHERE r.status_code < 400) AS p50,
       max(f.n) AS feedback_count,
       max(f.mean) AS feedback_mean,
       max(t.rated) AS rated,
       max(t.down) AS thumbs_down,
       max(v.votes) AS votes,
       max(v.down_votes) AS down_votes,
       max(w.weighed_requests) AS weighed_requests,
       max(w.weighed_errors) AS weighed_errors,
       max(w.counted_requests) AS counted_requests,
       max(w.sticky_users) AS sticky_users,
       max(w.drawn_requests) AS drawn_requests,
       sum(r.missing) AS opinions_missing,
       max(km.missing_weighed) AS missing_weighed,
       sum(r.unopined * (1 - r.started)) AS missing_unanswered,
       max(km.opinions_answered) AS opinions_answered,
       max(km.opinions_failed) AS opinions_failed
FROM r LEFT JOIN f ON f.target = r.target LEFT JOIN t ON t.target = r.target
     LEFT JOIN v ON v.target = r.target LEFT JOIN w ON w.target = r.target
     LEFT JOIN km ON km.target = r.target
GROUP BY r.target
ORDER BY count(*) DESC, r.target
"""

def route_health(con: Connection, alias: str, since: datetime, until: datetime,
                 max_votes_per_voter: int = MAX_VOTES_PER_VOTER,
                 max_requests_per_user: int = MAX_REQUESTS_PER_USER,
                 canary: str | None = None,
                 history_baseline: bool = False,
                 now: datetime | None = None,
                 asked_bound_s: float | None = None,
                 by_key: bool = False,
                 skip: tuple[datetime, datetime] | None = None) -> list[dict[str, Any]]:
    """Per target: requests (judged: not `unjudged_requests`), errors, error_rate,
    unjudged_requests (4xx that say nothing of the target, answers the client gave up on: see
    the module doc), weighed_requests and weighed_errors (weighed per sticky user, see the
    module doc), counted_requests (what the canary's `min_requests` counts, module doc),
    sticky_users, weighed_ceiling and counted_ceiling (module doc), feedback_count,
    feedback_mean, rated_requests (requests with feedback), thumbs_down (of those, the ones
    whose mean score is below 0), votes and down_votes (weighed per voter), latency_p50_ms,
    opinions_missing (failures or hang-ups judged by a background second opinion that was
    skipped for the budget or has not reported yet: unjudged, but the canary's promotion must
    survive counting them as its errors, exporter/cycle_canary.py),
    opinions_missing_weighed (those, each client key's at most its judged requests and
    `max_requests_per_user`),
    over production traffic for `alias` in [since, until). `canary`: the alias's open canary
    model, whose 4xx without a second opinion count. `history_baseline`: failures no second
    opinion judged are unjudged and in `opinions_missing` (the module doc). `now`: when an
    asked opinion not in the store is lost (after its `late_due`; an `asked` row without one,
    written before rows carried it, once older than `asked_bound_s`: None, never).
    `by_key`: each row also gets `by_key`, per client key (`route.client_key`, every key of a
    rotation chain under its `stratum`, the chain's first key's id; "" for rows without one) its
    `trials` and `failures` (weighed as `weighed_requests` and `weighed_errors`), its `judged`
    (its judged requests, each once: `requests`' part), its `traffic` (all its rows, excused or
    not, weighed per sticky user) and its `missing` (its part of `opinions_missing_weighed`) and
    its `judged_parts` (its judged requests in each of `HISTORY_PARTS` equal parts of [the
    window's first row, `until`): how they were spread in time, exporter/canary_bursts.py): what
    the canary's strata read (exporter/canary_strata.py), and `first_at`, its
    first row's time in the window (ISO 8601, UTC), whence the strata's rates. `skip`: a
    part [from, until) of the window left out (a re-opened canary's closed time: its rows are
    no canary's evidence, r14m LOW)."""
    if max_votes_per_voter < 1 or max_requests_per_user < 1:
        raise ValueError("max_votes_per_voter and max_requests_per_user must be at least 1")
    dialect = dialect_of(con)
    fields = {"attempt": dialect.try_integer("route ->> 'attempt'"),
              "primary_status": dialect.try_integer("route ->> 'primary_status'"),
              "relay": RELAY_MARK, "at_us": dialect.epoch_us("created_at")}
    cap, per_user = float(max_votes_per_voter), float(max_requests_per_user)
    moment = now or datetime.now(UTC)
    # never past the bound: no row of the window is older than `since`
    bound = since if asked_bound_s is None else moment - timedelta(seconds=asked_bound_s)
    gap = skip or (since, since)  # [since, since): nothing left out
    params = [since, bound, alias, since, until, *gap, canary, history_baseline,
              moment.timestamp(), cap, cap, per_user, per_user,
              COUNTED_PER_USER * per_user, per_user, per_user]
    rows = con.execute(_HEALTH_SQL.format(**fields), params).fetchall()
    health = [
        {
            "target": target,
            "requests": requests,
            "errors": errors,
            "error_rate": errors / requests if requests else 0.0,
            "unjudged_requests": unjudged,
            "feedback_count": feedback_count or 0,
            "feedback_mean": feedback_mean,
            "rated_requests": rated or 0,
            "thumbs_down": thumbs_down or 0,
            "votes": round(float(votes or 0), 6),
            "down_votes": round(float(down_votes or 0), 6),
            "weighed_requests": round(float(weighed_requests or 0), 6),
            "weighed_errors": round(float(weighed_errors or 0), 6),
            "counted_requests": round(float(counted_requests or 0), 6),
            "sticky_users": int(sticky_users or 0),
            "weighed_ceiling": per_user * int(sticky_users or 0) + float(drawn_requests or 0),
            "counted_ceiling": COUNTED_PER_USER * per_user * int(sticky_users or 0)
            + float(drawn_requests or 0),
            "latency_p50_ms": None if p50 is None else round(p50, 3),
            "opinions_missing": opinions_missing or 0,
            "opinions_missing_weighed": round(float(missing_weighed or 0), 6),
            "opinions_missing_unanswered": missing_unanswered or 0,
            "opinions_answered": round(float(opinions_answered or 0), 6),
            "opinions_failed": round(float(opinions_failed or 0), 6),
        }
        for target, requests, errors, unjudged, p50, feedback_count, feedback_mean, rated,
        thumbs_down, votes, down_votes, weighed_requests, weighed_errors, counted_requests,
        sticky_users, drawn_requests, opinions_missing,
        missing_weighed, missing_unanswered, opinions_answered, opinions_failed in rows
    ]
    if by_key:
        part = dialect.int_div(f"(at_us - t0) * {HISTORY_PARTS}",
                               "greatest(CAST(? AS BIGINT) - t0, 1)")
        add_by_key(con, health, _HEALTH_CTES, fields, params, per_user,
                   COUNTED_PER_USER * per_user, part, alias, since,
                   until)
    return health

