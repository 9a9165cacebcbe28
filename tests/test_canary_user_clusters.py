"""A sticky user's requests are one cluster per client key (storage/route_health.py): another
key sending with the app's user ids must not take the app's weight away (review r14m HIGH 1: a
second key's one-token requests carrying the app's 40 user ids cut the app's weighed canary
requests from 26.0 to 5.9, and a canary failing 12% of the app's requests was promoted)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import UPSTREAM_KEY, ProxyServer
from tests.test_canary_strata import Deployment
from tests.test_cycle import ALIAS


def trials(deployment: Deployment) -> dict[str, dict[str, float]]:
    """Each target's weighed trials per client key during the canary."""
    rows = deployment.admin.route_health(ALIAS, since=deployment.state["promoted_at"],
                                         by_key=True)["targets"]
    return {r["target"]: {k: round(v["trials"], 6) for k, v in r["by_key"].items()}
            for r in rows}


def test_another_keys_requests_with_the_apps_user_ids_leave_the_apps_weight_alone(
        proxy_factory: Callable[..., ProxyServer], tmp_path: Path) -> None:
    deployment = Deployment(proxy_factory(issue_keys=True, openai_api_key=UPSTREAM_KEY),
                            tmp_path, percent=50)
    app, other = deployment.client("app"), deployment.client("other")
    deployment.open_canary()
    for n in range(8):  # 8 users, 6 requests each: over the 5 a user counts for
        deployment.send(app, 6, user=f"user-{n}")
    before = trials(deployment)
    (app_key,) = {key for keys in before.values() for key in keys}
    assert sum(keys[app_key] for keys in before.values()) > 0
    for n in range(8):
        deployment.send(other, 30, user=f"user-{n}", max_tokens=1)
    after = trials(deployment)
    assert {target: keys[app_key] for target, keys in after.items()} == \
        {target: keys[app_key] for target, keys in before.items()}
    # the other key's requests are weighed on their own (its allowance caps them in the strata)
    assert all(len(keys) == 2 for keys in after.values())
