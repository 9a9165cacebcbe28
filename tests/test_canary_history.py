"""The canary's history baseline (exporter/canary_history.py): when the current target is
starved beside the canary (a 90% canary), its traffic before the promotion is judged by the
canary's rule (storage/route_health.py `history_baseline`), each decision at the bound least
favourable to it (r14 MED 4)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest

from exporter.canary_history import answer_share
from exporter.cycle_canary import judge_canary
from exporter.cycle_config import CanaryConfig
from tests import test_cycle
from tests.conftest import UPSTREAM_KEY, ProxyServer, both_stores
from tests.test_canary_failures import HI, SINCE
from tests.test_cycle import ALIAS, CURRENT, run
from tests.test_cycle_canary import ask, open_canary, until_decided, wait_ingested

loop = test_cycle.loop
STABLE, FALLBACK = "stable-model", "fallback-model"
AGE = timedelta(hours=1)


def fail_everywhere(proxy: ProxyServer, count: int) -> None:
    """An app key's requests that every model answers 500."""
    client = proxy.openai().with_options(max_retries=0)
    for n in range(count):
        with contextlib.suppress(openai.InternalServerError):
            client.chat.completions.create(
                model=ALIAS, messages=[{"role": "user", "content": f"poison {n}"}],
                extra_headers={"x-fake-fail": "500"})


@both_stores
def test_failures_sent_before_a_canary_do_not_get_a_bad_one_promoted(
        loop: ProxyServer, tmp_path: Path) -> None:
    """50 requests failing on every model from an app key, then 100 of the apps', before a
    90% canary failing 20%: the history read 50/150 (33%) for the current model and the canary
    (27/136) was promoted beside a current model at 0 of 14. Those 50 had no second opinion:
    left out for a promotion (0/100), counted only for a rollback (at most up to the rate the
    current model's own requests beside the canary make plausible: it may be rolled back)."""
    fail_everywhere(loop, 50)
    ask(loop, 100, start=1000)
    wait_ingested(loop, 150)
    cfg, model = open_canary(loop, tmp_path, percent=90)
    loop.upstream.state.model_error_rate[model] = 0.2
    ask(loop, 150, start=2000)
    wait_ingested(loop, 300)
    outcome = run(loop, cfg)
    assert outcome.run.get("outcome") != "promoted", outcome.message
    assert loop.admin().routes()[ALIAS]["targets"][0]["model"] == CURRENT
    assert "50 failures there no second opinion judged" in outcome.message, outcome.message


def test_the_history_is_judged_by_the_canarys_rule(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    """Before any canary: a 500 no other model judged is the target's error in the health
    people read, unjudged (`opinions_missing`) in the history baseline. So are a failure a
    fallback answered (r14c MED 5: during a canary the other arm is asked first, and one that
    fails too makes it nobody's) and a stream cut after its first byte (r14c HIGH 2: a client
    can cause it; during a canary it falls on either arm, in the history on the current
    target alone). The cut ones are apart: no second opinion would have judged them."""
    proxy = proxy_factory()
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}],
                              "fallbacks": [{"model": FALLBACK}]}})
    client = proxy.openai().with_options(max_retries=0)
    fail_everywhere(proxy, 4)
    for _ in range(3):  # a stream cut after its first byte: the drawn arm's error on either arm
        with contextlib.suppress(openai.APIError):
            for _chunk in client.chat.completions.create(
                    model=ALIAS, messages=HI, stream=True,
                    extra_headers={"x-fake-cut-after": "2"}):
                pass
    proxy.upstream.state.model_error_rate[STABLE] = 1.0
    for _ in range(2):  # the fallback answers: the stable model's error
        client.chat.completions.create(model=ALIAS, messages=HI)
    proxy.upstream.state.model_error_rate[STABLE] = 0.0
    for _ in range(5):
        client.chat.completions.create(model=ALIAS, messages=HI)
    proxy.wait_for("SELECT count(*) FROM interactions WHERE traffic = 'production'",
                   lambda r: r[0][0] >= 14)
    until = datetime.now(UTC).isoformat()

    def row(**kw: Any) -> dict[str, Any]:
        targets = admin.route_health(ALIAS, since=SINCE, until=until, **kw)["targets"]
        return {r["target"]: r for r in targets}[STABLE]

    read = row()
    assert (read["requests"], read["errors"], read["opinions_missing"]) == (14, 9, 0), read
    history = row(history_baseline=True)
    assert (history["requests"], history["errors"], history["opinions_missing"]) == (5, 0, 9), \
        history
    assert history["opinions_missing_unanswered"] == 6, history
    assert history["weighed_requests"] == 5 and history["weighed_errors"] == 0


def history_row(requests: int, errors: int, unjudged: int = 0) -> dict[str, Any]:
    return {"requests": requests, "errors": errors, "opinions_missing": unjudged}


def test_a_rollback_counts_the_historys_unjudged_failures_as_the_current_targets() -> None:
    """The bounds: a canary no worse than the history without its unjudged failures but
    short of proving it is not promoted; one worse even with every one of them counted as the
    current target's error is rolled back; one in between waits (nothing an app key sends
    before a canary rolls it back nor promotes it)."""
    cfg = CanaryConfig(percent=90)
    starved = history_row(14, 0)
    bad = judge_canary(history_row(136, 27), starved, cfg, AGE, history_row(100, 0, 50))
    assert bad.verdict == "continue", bad.reasons
    errors = bad.tests[0]
    assert errors.baseline == "history" and errors.baseline_unjudged == 50
    assert "counted as its errors only for a rollback" in bad.reasons[0]
    broken = judge_canary(history_row(136, 90), starved, cfg, AGE, history_row(100, 0, 50))
    assert broken.verdict == "rollback", broken.reasons
    good = judge_canary(history_row(300, 0), starved, cfg, AGE, history_row(300, 0, 50))
    assert good.verdict == "promote", good.reasons


def test_no_promotion_on_a_history_far_above_the_current_targets_own_rate() -> None:
    """Failures the history still counts (a stream cut after its first byte, which an app key
    may also send on purpose) raised it to 30/150; the current target beside the canary had 0
    of 20: a canary at 20/136 read as no worse and was promoted."""
    cfg = CanaryConfig(percent=90)
    verdict = judge_canary(history_row(136, 20), history_row(20, 0), cfg, AGE,
                           history_row(150, 30))
    assert verdict.verdict == "continue", verdict.reasons
    assert "far above its own beside the canary" in verdict.reasons[0]
    plausible = judge_canary(history_row(136, 2), history_row(20, 0), cfg, AGE,
                             history_row(300, 3))
    assert plausible.verdict == "promote", plausible.reasons


def test_a_poisoned_history_does_not_keep_a_bad_canary_in_place() -> None:
    """r14c MED 3: 50 failures no second opinion judged in the history, counted in full for a
    rollback, kept a canary failing 20% at 90% until the current target had 100 requests of
    its own (879 canary requests). Worse than the current target's concurrent traffic alone
    rolls it back too; each of the two rollback tests has a quarter of alpha."""
    cfg = CanaryConfig(percent=90)
    verdict = judge_canary(history_row(350, 70), history_row(30, 0), cfg, AGE,
                           history_row(100, 0, 50))
    assert verdict.verdict == "rollback", verdict.reasons
    assert any("against 0/30 (0.000): " in why for why in verdict.reasons), verdict.reasons
    assert all(t.upper == pytest.approx(math.log(4 / cfg.alpha))
               for t in verdict.tests if t.metric == "errors")
    fine = judge_canary(history_row(350, 3), history_row(30, 0), cfg, AGE,
                        history_row(300, 3, 50))
    assert fine.verdict != "rollback", fine.reasons


def with_opinions(row: dict[str, Any], answered: float, failed: float) -> dict[str, Any]:
    return {**row, "opinions_answered": answered, "opinions_failed": failed}


def test_a_promotion_credits_the_share_of_the_historys_failures_the_canary_answers() -> None:
    """r14c MED 4: the current target's own 5xx (6 of 200) left out of the history while the
    canary's own (3 of 109, the current target answers them) counted: an honest canary waited
    775 requests, not 125. The second opinions beside the canary (both arms, 5 of 5 answered)
    credit that share of the history's unanswered failures for a promotion; cuts after the
    first byte are never credited, and requests failing everywhere beside the canary lower it."""
    cfg = CanaryConfig(percent=90)
    canary, stable = history_row(109, 3), history_row(16, 0)
    history = {**history_row(194, 0, 6), "opinions_missing_unanswered": 6}
    honest = judge_canary(with_opinions(canary, 5, 0), stable, cfg, AGE, history)
    assert honest.verdict == "promote", honest.reasons
    assert honest.tests[0].baseline_credited == 6
    cuts = {**history, "opinions_missing_unanswered": 0}
    assert judge_canary(with_opinions(canary, 5, 0), stable, cfg, AGE, cuts).verdict \
        == "continue"
    everywhere = judge_canary(with_opinions(canary, 1, 4), with_opinions(stable, 0, 5), cfg,
                              AGE, history)
    assert everywhere.verdict == "continue", everywhere.reasons


def test_the_credit_stays_within_what_the_current_targets_own_requests_make_plausible() -> None:
    """An app key's 30 requests failing on every model before the canary are credited like
    the current target's own 5xx (a canary failing 12% answers none of them, and the current
    target answers its failures: share 1). Credited in full (23%) a canary failing 12% was
    promoted at 100 requests beside the current target at 0 of 11; the credit is cut to the
    rate at which 0 of 11 is as likely as not (6%), so it is not."""
    cfg = CanaryConfig(percent=90)
    poisoned = {**history_row(100, 0, 30), "opinions_missing_unanswered": 30}
    for requests in range(100, 600, 20):
        verdict = judge_canary(with_opinions(history_row(requests, round(0.12 * requests)),
                                             5, 0), history_row(requests // 9, 0), cfg, AGE,
                               poisoned)
        assert verdict.verdict != "promote", (requests, verdict.reasons)
        credited = verdict.tests[0].baseline_credited
        assert credited / (100 + credited) <= 1 - 0.5 ** (1 / (requests // 9)) + 1e-6


def test_an_honest_canary_beside_a_current_target_with_its_own_5xx_is_promoted_soon(
        loop: ProxyServer, tmp_path: Path) -> None:
    """r14c MED 4 end to end: both models fail 5% of requests on their own (the other
    answers them), the canary takes 90%: promoted within 300 requests (it took 925)."""
    loop.upstream.state.model_error_rate[CURRENT] = 0.05
    ask(loop, 200, start=1000)
    wait_ingested(loop, 200)
    loop.upstream.state.model_error_rate[CURRENT] = 0.0  # the evaluation before the canary
    cfg, model = open_canary(loop, tmp_path, percent=90)
    loop.upstream.state.model_error_rate.update({CURRENT: 0.05, model: 0.05})
    outcome = until_decided(loop, cfg, lambda start: ask(loop, 25, start=2000 + start), 25,
                            300, logged=200)
    assert outcome is not None and outcome.run["outcome"] == "promoted", outcome.message


def test_the_second_opinions_share_weighs_each_client_key_by_its_judged_requests(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    """Beside a canary, each arm's 5xx the other answered (`opinions_answered`) or failed too
    (`opinions_failed`), one client key's share weighed by its judged requests there."""
    proxy = proxy_factory()
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    since = datetime.now(UTC).isoformat()
    admin.promote(ALIAS, "canary-model", canary=50)
    proxy.upstream.state.model_error_rate[STABLE] = 1.0
    client = proxy.openai().with_options(max_retries=0)
    for n in range(30):  # the canary answers every one drawn to the current target
        client.chat.completions.create(model=ALIAS, messages=[{"role": "user",
                                                               "content": f"hi {n}"}])
    fail_everywhere(proxy, 30)
    proxy.wait_for("SELECT count(*) FROM interactions WHERE traffic = 'production'",
                   lambda r: r[0][0] >= 60)
    rows = {r["target"]: r for r in admin.route_health(ALIAS, since=since)["targets"]}
    stable, canary = rows[STABLE], rows["canary-model"]
    assert stable["opinions_answered"] > 0 and stable["opinions_failed"] > 0, stable
    assert stable["opinions_answered"] + stable["opinions_failed"] \
        == pytest.approx(stable["weighed_requests"]), stable
    assert canary["opinions_answered"] == 0
    assert canary["opinions_failed"] == pytest.approx(canary["weighed_requests"]), canary


@both_stores
def test_one_keys_failures_everywhere_move_the_share_only_as_far_as_its_judged_traffic(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    """r14d MED 5: each key's opinions weighed 5 at most, so another key's 20 requests failing
    everywhere weighed as much as the app's own 5xx the canary answered, halving the share
    credited to an honest canary (promoted after 475 requests, not 125). That key has no
    judged requests: its opinions weigh nothing."""
    proxy = proxy_factory(issue_keys=True, openai_api_key=UPSTREAM_KEY)
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    since = datetime.now(UTC).isoformat()
    admin.promote(ALIAS, "canary-model", canary=50)
    app = proxy.openai(api_key=admin.create_key("app")["key"]).with_options(max_retries=0)
    other = proxy.openai(api_key=admin.create_key("other")["key"]).with_options(max_retries=0)
    proxy.upstream.state.model_error_rate[STABLE] = 1.0
    for n in range(20):  # the canary answers each one drawn to the current target
        app.chat.completions.create(model=ALIAS, messages=[{"role": "user",
                                                            "content": f"hi {n}"}])
    proxy.upstream.state.model_error_rate[STABLE] = 0.0
    for n in range(40):
        app.chat.completions.create(model=ALIAS, messages=[{"role": "user",
                                                            "content": f"later {n}"}])
    for n in range(20):
        with contextlib.suppress(openai.InternalServerError):
            other.chat.completions.create(
                model=ALIAS, messages=[{"role": "user", "content": f"poison {n}"}],
                extra_headers={"x-fake-fail": "500"})
    proxy.wait_for("SELECT count(*) FROM interactions WHERE traffic = 'production'",
                   lambda r: r[0][0] >= 80)
    rows = {r["target"]: r for r in admin.route_health(ALIAS, since=since)["targets"]}
    assert rows["canary-model"]["opinions_failed"] == 0, rows  # the other key's: no weight
    assert answer_share(rows["canary-model"], rows[STABLE]) == pytest.approx(1.0), rows


def test_nothing_is_credited_beside_a_current_target_with_few_requests() -> None:
    """r14d MED 4: 0 of 4 requests beside the canary made 16% plausible, so 28 of 50 failures
    poisoning the history were credited and a canary failing 10% was promoted (1 run in 15).
    Below `CREDIT_MIN_REQUESTS` of the current target's own nothing is credited."""
    cfg = CanaryConfig(percent=90)
    poisoned = {**history_row(150, 0, 50), "opinions_missing_unanswered": 50}
    verdict = judge_canary(with_opinions(history_row(110, 11), 5, 0), history_row(4, 0), cfg,
                           AGE, poisoned)
    assert verdict.verdict == "continue", verdict.reasons
    assert verdict.tests[0].baseline_credited == 0


def test_a_history_far_below_the_current_targets_own_rate_rolls_nothing_back() -> None:
    """r14d MED 3: 1000 cheap requests that never fail, sent before the canary, brought the
    history to 10/1200; a good canary at 22/444 (the current target beside it: 3/56) was rolled
    back on it. Such a history rolls nothing back; the current target's own traffic still
    rolls back a canary far worse than it."""
    cfg = CanaryConfig(percent=90)
    diluted = history_row(1200, 10)
    good = judge_canary(history_row(444, 22), history_row(56, 3), cfg, AGE, diluted)
    assert good.verdict == "continue", good.reasons
    assert "far below its own beside the canary" in good.reasons[0]
    bad = judge_canary(history_row(444, 150), history_row(56, 3), cfg, AGE, diluted)
    assert bad.verdict == "rollback", bad.reasons
    honest = judge_canary(history_row(444, 60), history_row(56, 0), cfg, AGE, diluted)
    assert honest.verdict == "rollback", honest.reasons


def test_a_poisoned_history_is_not_credited_beside_a_current_target_with_few_errors() -> None:
    """h21 (issue 14): 50 requests failing everywhere before the canary, the current target
    at 1 of 12 beside it: the median cut still credited the history up to 13.6% and a canary
    failing 10% (4 of 100 so far) was promoted (29% of runs beside a current target failing
    2%). That fully credited history (26%) is one its own requests make unlikely (below
    `CREDIT_DOUBT`): nothing is credited. An honest history (7 of 150, the current target at
    0 of 11) is credited and a good canary promoted."""
    cfg = CanaryConfig(percent=90)
    poisoned = {**history_row(147, 0, 53), "opinions_missing_unanswered": 53}
    bad = judge_canary(with_opinions(history_row(100, 4), 4, 0),
                       with_opinions(history_row(12, 1), 1, 0), cfg, AGE, poisoned)
    assert bad.verdict == "continue", bad.reasons
    assert bad.tests[0].baseline_credited == 0
    honest = {**history_row(143, 0, 7), "opinions_missing_unanswered": 7}
    good = judge_canary(with_opinions(history_row(100, 3), 3, 0), history_row(11, 0), cfg, AGE,
                        honest)
    assert good.verdict == "promote", good.reasons
    assert good.tests[0].baseline_credited > 0
