"""The canary's history baseline (exporter/canary_history.py): when the current target is
starved beside the canary (a 90% canary), its traffic before the promotion is judged by the
canary's rule (storage/route_health.py `history_baseline`), each decision at the bound least
favourable to it (r14 MED 4)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai

from exporter.cycle_canary import judge_canary
from exporter.cycle_config import CanaryConfig
from tests import test_cycle
from tests.conftest import ProxyServer, both_stores
from tests.test_canary_failures import HI, SINCE
from tests.test_cycle import ALIAS, CURRENT, run
from tests.test_cycle_canary import ask, open_canary, wait_ingested

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
    left out for a promotion (0/100), counted only for a rollback."""
    fail_everywhere(loop, 50)
    ask(loop, 100, start=1000)
    wait_ingested(loop, 150)
    cfg, model = open_canary(loop, tmp_path, percent=90)
    loop.upstream.state.model_error_rate[model] = 0.2
    ask(loop, 150, start=2000)
    wait_ingested(loop, 300)
    outcome = run(loop, cfg)
    assert outcome.status == "active" and outcome.run["step"] == "watch", outcome.message
    assert [t["model"] for t in loop.admin().routes()[ALIAS]["targets"]] == [CURRENT, model]
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
    [errors, _] = bad.tests
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
