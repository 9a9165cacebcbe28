"""A background opinion lost at a restart does not hold the canary for good (r14c #1).

Opinions in flight at shutdown are cancelled and log nothing, so their rows stayed `asked` with
no opinion row: in `opinions_missing` forever, each a canary error for a promotion, so a clean
canary was held after any restart during a flood of slow hang-ups. An `asked` row says by when
its opinion is due in the store (`route.late_due`); after that it is lost, plainly unjudged."""

from __future__ import annotations

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai

from exporter.cycle_canary import judge_canary
from exporter.cycle_config import CanaryConfig
from proxy.admin.promote_api import FAR_FUTURE, opinion_bound_s
from storage.db import connect
from storage.promotions import canary_of, latest_episode
from storage.route_health import route_health
from storage.routes import load_routes
from tests.conftest import FakeUpstream, ProxyServer, both_stores, proxy_settings, serve_proxy
from tests.store_support import connected
from tests.test_canary_failures import ALIAS, CANARY, HI, SINCE, STABLE
from tuneloop.config import Settings


@both_stores
def test_opinions_cancelled_at_a_restart_do_not_hold_a_clean_canary(
        tmp_path: Path, fake_openai: FakeUpstream, store: str) -> None:
    settings = proxy_settings(tmp_path, fake_openai.base_url, db=store, hangup_probe_min_s=0.2)
    with serve_proxy(settings) as url:
        proxy = ProxyServer(url, settings, fake_openai)
        admin = proxy.admin()
        admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
        admin.promote(ALIAS, CANARY, canary=50)
        hanger = proxy.openai(timeout=3.0).with_options(max_retries=0)

        def hang_up(_: int) -> None:  # the other arm's answer is due 3 s on: after shutdown
            with contextlib.suppress(openai.APIError):
                hanger.chat.completions.create(model=ALIAS, messages=HI,
                                               extra_headers={"x-fake-delay-ms": "8000"})

        with ThreadPoolExecutor(12) as pool:
            list(pool.map(hang_up, range(12)))
        proxy.close()
    with serve_proxy(settings) as url:
        proxy = ProxyServer(url, settings, fake_openai)
        client = proxy.openai().with_options(max_retries=0)
        with ThreadPoolExecutor(4) as pool:
            # 200 at 50%: the canary's share clears min_requests (50) whatever the draw (with
            # 120 it fell short in CI once in a while: 47 and 48 of 50)
            list(pool.map(lambda _: client.chat.completions.create(model=ALIAS, messages=HI),
                          range(200)))
        proxy.wait_for("SELECT count(*) FROM interactions WHERE traffic = 'production'",
                       lambda r: r[0][0] >= 212)
        lost = [float(due) for [due] in proxy.sql(
            "SELECT route ->> 'late_due' FROM interactions i WHERE route ->> 'late_opinion' "
            f"= 'asked' AND route ->> 'primary' = '{CANARY}' AND NOT EXISTS "
            "(SELECT 1 FROM interactions p WHERE p.source_id = i.id)")]
        assert lost  # the case this is about: the canary's opinions cut by the restart
        proxy.close()
    # the health at explicit moments (storage's `now`), not waited for: under load the wait
    # for the rows' `late_due` ran past its deadline
    before = health_at(str(settings.db), settings, min(lost) - 0.01)
    assert before[CANARY]["opinions_missing"] > 0, before[CANARY]  # held until they are due
    rows = health_at(str(settings.db), settings, max(lost) + 0.01)
    assert rows[CANARY]["opinions_missing"] == 0, rows[CANARY]
    verdict = judge_canary(rows[CANARY], rows[STABLE], CanaryConfig(min_requests=50),
                           timedelta(hours=1))
    assert verdict.verdict == "promote", verdict.reasons


def test_asked_rows_written_without_a_due_time_are_lost_after_the_longest_deadline(
        tmp_path: Path, fake_openai: FakeUpstream) -> None:
    """Rows written before `asked` rows carried `late_due` (r14c fix) stayed missing for ever
    once their opinion was lost: one older than the longest deadline an opinion could have
    had (connect, then reply and first chunk within the read timeout, and the ingest's grace;
    the settings' or the route's, whichever is longer) is lost too."""
    settings = proxy_settings(tmp_path, fake_openai.base_url, hangup_probe_min_s=0.2)
    with serve_proxy(settings) as url:
        proxy = ProxyServer(url, settings, fake_openai)
        admin = proxy.admin()
        admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
        admin.promote(ALIAS, CANARY, canary=50)
        hanger = proxy.openai(timeout=2.0).with_options(max_retries=0)

        def hang_up(_: int) -> None:
            with contextlib.suppress(openai.APIError):
                hanger.chat.completions.create(model=ALIAS, messages=HI,
                                               extra_headers={"x-fake-delay-ms": "8000"})

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(hang_up, range(6)))
        proxy.wait_for("SELECT count(*) FROM interactions WHERE route ->> 'late_opinion' = "
                       "'asked'", lambda r: r[0][0] >= 1)
        proxy.close()
    with connect(settings.db) as con:  # as an older server wrote them: no `late_due`
        for row_id, route in con.execute(
                "SELECT id, route FROM interactions WHERE route ->> 'late_opinion' = 'asked'"
                ).fetchall():
            older = {k: v for k, v in json.loads(route).items() if k != "late_due"}
            con.execute("UPDATE interactions SET route = ? WHERE id = ?",
                        [json.dumps(older), row_id])
    quick = settings.model_copy(update={"connect_timeout_s": 1.0, "read_timeout_s": 2.0})
    with connected(str(quick.db)) as con:
        # the newest whose opinion is not in the store (under load some came in before the
        # shutdown)
        [[newest]] = con.execute(
            "SELECT max(created_at) FROM interactions i WHERE route ->> 'late_opinion' = "
            "'asked' AND NOT EXISTS (SELECT 1 FROM interactions p WHERE p.source_id = i.id)"
            ).fetchall()
    assert newest is not None  # the case this is about: an opinion cut by the shutdown
    bound_s = opinion_bound_s(quick, None)  # 1 + 2 * 2 s, and the ingest's grace
    assert bound_s < opinion_bound_s(settings, None)  # the quick settings' own
    # the health at explicit moments (storage's `now`) as the server reads it: not waited for
    waited = health_at(str(quick.db), quick, newest.timestamp() + bound_s - 0.01)
    assert any(r["opinions_missing"] for r in waited.values()), waited  # waited at first
    lost = health_at(str(quick.db), quick, newest.timestamp() + bound_s + 0.01)
    assert not any(r["opinions_missing"] for r in lost.values()), lost


def health_at(store: str, settings: Settings, moment: float) -> dict[str, dict[str, Any]]:
    """Each target's health row since SINCE as the admin API reads it (its open canary, the
    route's opinion bound), with `moment` (a Unix time) as now."""
    with connected(store) as con:
        spec = load_routes(con).get(ALIAS)
        opened = canary_of(latest_episode(con, ALIAS), spec)
        targets = route_health(con, ALIAS, datetime.fromisoformat(SINCE), FAR_FUTURE,
                               canary=None if opened is None else opened.model,
                               now=datetime.fromtimestamp(moment, UTC),
                               asked_bound_s=opinion_bound_s(settings, spec))
    return {row["target"]: row for row in targets}
