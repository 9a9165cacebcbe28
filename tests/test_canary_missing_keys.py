"""Many client keys' unjudged hang-ups must not hold a clean canary (issue 14, r14e MED 4).

Each key's missing rows (failures or hang-ups whose background second opinion was skipped or
has not reported) counted at most its judged requests and `max_requests_per_user` (5) for a
promotion (r14d HIGH 1), but per key: six keys each mixing quick successes into their
hang-ups added 30 to the hold, and a clean 50% canary then needs about 1,200 requests on each
arm (a handful more keys: never promoted before `max_hours`). The missing rows are now weighed
inside the canary's strata (exporter/canary_strata.py `missing_weighed`): a history key's
within its allowance, the keys new during the canary as one key in their one allowance."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from exporter.canary_strata import NEW_KEYS_PART, SLACK, Strata, stratified
from tests.conftest import UPSTREAM_KEY, ProxyServer, both_stores
from tests.test_canary_failures import HI
from tests.test_canary_strata import Deployment, until_decided
from tests.test_cycle import ALIAS

KEYS = 6
ROUNDS = 20
"""Each attacking key's hang-ups, each followed by a quick request."""


def row(keys: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """A health row from each key's (trials, missing), its missing weighed as on main: each
    key's in full (already at most its judged requests and 5)."""
    return {"weighed_requests": sum(n for n, _ in keys.values()), "weighed_errors": 0.0,
            "opinions_missing": sum(m for _, m in keys.values()),
            "opinions_missing_weighed": sum(m for _, m in keys.values()),
            "by_key": {k: {"trials": n, "failures": 0.0, "traffic": n, "missing": m}
                       for k, (n, m) in keys.items()}}


USUAL = Strata({"app": 100.0, "other": 20.0}, 1.0 / SLACK)
"""Each history key's allowance is its rate: 100 and 20 requests."""


def test_fresh_keys_missing_rows_weigh_as_one_keys() -> None:
    fresh = {f"k{n}": (10.0, 5.0) for n in range(KEYS)}
    canary, _ = stratified(row({"app": (50, 0), "other": (10, 0), **fresh}), row({}), USUAL)
    pool = NEW_KEYS_PART * 120  # the new keys' part of the route's rate, nobody silent
    assert canary["unstratified_missing"] == 5 * KEYS
    assert canary["opinions_missing_weighed"] == pytest.approx(5 * pool / (10 * KEYS + 5), abs=1e-5)
    # with allowance to spare (the app's requests: the new keys' is a tenth of what the
    # live history keys count, r14l), one key's full 5, never each key's
    roomy = Strata(USUAL.rates, 100.0 / SLACK)
    canary, _ = stratified(row({"app": (1000, 0), **fresh}), row({}), roomy)
    assert canary["opinions_missing_weighed"] == pytest.approx(5)


def test_a_history_keys_missing_rows_count_within_its_allowance() -> None:
    # under its allowance (as an honest app at its usual rate): in full, as on main
    canary, _ = stratified(row({"app": (60, 5), "other": (10, 0)}), row({"app": (30, 0)}),
                           USUAL)
    assert canary["opinions_missing_weighed"] == 5
    # a key with a small usual rate filling it with quick requests: its part of the allowance
    canary, _ = stratified(row({"app": (60, 0), "other": (35, 5)}), row({}), USUAL)
    assert canary["opinions_missing_weighed"] == pytest.approx(5 * 20 / 40)


def test_rows_without_per_key_missing_are_counted_as_they_came() -> None:
    """A guard (as on main): an older server's rows, or one key, keep their weighed count."""
    old = row({"app": (60, 5), "k": (10, 5)})
    for counts in old["by_key"].values():
        del counts["missing"]
    assert stratified(old, row({}), USUAL)[0]["opinions_missing_weighed"] == 10
    alone = row({"app": (500, 5)})
    assert stratified(alone, row({}), USUAL)[0]["opinions_missing_weighed"] == 5


def hang_up_from_many_keys(deployment: Deployment, keys: list[str] | None = None) -> None:
    """KEYS keys (fresh ones unless given), each hanging up after 0.4 s on answers both arms
    give in 1.5 s (a background opinion budget of 4, a key's share 1, two at once from each:
    most are skipped) and sending a quick request after each (its judged requests, so each
    key's missing rows weigh their full 5)."""
    proxy = deployment.proxy
    if keys is None:
        keys = [deployment.admin.create_key(f"hanger{n}")["key"] for n in range(KEYS)]
    hangers = [proxy.openai(api_key=k, timeout=0.4) for k in keys]
    quick = [proxy.openai(api_key=k, timeout=10) for k in keys]

    def hang_up_then_succeed(n: int) -> None:
        with contextlib.suppress(openai.APIError):
            hangers[n % KEYS].chat.completions.create(
                model=ALIAS, messages=HI, extra_headers={"x-fake-delay-ms": "1500"})
        quick[n % KEYS].chat.completions.create(model=ALIAS, messages=HI)

    with ThreadPoolExecutor(2 * KEYS) as pool:  # two at once from each key
        list(pool.map(hang_up_then_succeed, range(KEYS * ROUNDS)))
    deployment.sent += 2 * KEYS * ROUNDS
    proxy.wait_for("SELECT count(*) FROM interactions WHERE traffic = 'production'",
                   lambda r: r[0][0] >= deployment.sent)


def promoted_despite_hang_ups(deployment: Deployment, app: openai.OpenAI, cap: int,
                              who: str, rounding: float = 0.0) -> None:
    """The app keeps its pace until the watch decides (at most `cap` requests): the keys'
    skipped hang-ups (well over one key's 5 before the strata) weigh at most one key's 5, and
    the clean canary is promoted."""
    step, sent = until_decided(deployment, lambda: deployment.paced(app, 50), cap)
    canary = step.detail["canary"]
    print(f"\n{KEYS} {who} hang-ups: {step.outcome} after {sent} app requests "
          f"(missing {canary.get('opinions_missing')}, weighed "
          f"{canary.get('unstratified_missing')} -> {canary.get('opinions_missing_weighed')})")
    assert canary["opinions_missing"] > 4 * 5, canary
    assert step.outcome == "promoted", (sent, step.note)
    assert canary["opinions_missing_weighed"] <= 5 + rounding, canary


@both_stores
def test_many_keys_hang_ups_do_not_hold_a_clean_canary(
        proxy_factory: Callable[..., ProxyServer], tmp_path: Path) -> None:
    """The app (the one key before the canary) sends at its usual pace; right after a 50%
    promotion six fresh keys hang up and succeed in turn. On main their missing rows weighed
    5 each (30) and the clean canary was still held ("wait on a background second opinion")
    at 600 app requests; now the new keys' rows count as one key's, within the new keys'
    allowance, and it is promoted as with one such key (about 240 requests an arm)."""
    proxy = proxy_factory(issue_keys=True, openai_api_key=UPSTREAM_KEY,
                          background_opinions_max=4, background_opinions_per_key=1,
                          hangup_probe_min_s=0.2)
    deployment = Deployment(proxy, tmp_path, percent=50, min_requests=50)
    app = deployment.client("app")
    deployment.paced(app, 100)
    deployment.open_canary()
    hang_up_from_many_keys(deployment)
    promoted_despite_hang_ups(deployment, app, 600, "keys'")
