"""/metrics shows costs and model ids: `metrics_auth = "token"` makes it ask for a bearer token
(the metrics token, the reviewer's or the admin's), the way Prometheus' `bearer_token` sends
it; the default (`open`) answers anyone who reaches the port."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import ADMIN_TOKEN, REVIEWER_TOKEN, ProxyServer
from tuneloop.config import load_settings
from tuneloop.errors import ConfigError

METRICS_TOKEN = "tlm-test-metrics-token-0123456789"
GAUGE = "tuneloop_route_cost_per_request_usd"


def scrape(proxy: ProxyServer, token: str | None = None) -> tuple[int, str]:
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    answer = proxy.http().get("/metrics", headers=headers)
    return answer.status_code, answer.text


def test_metrics_are_open_by_default(proxy: ProxyServer) -> None:
    status, text = scrape(proxy)
    assert status == 200 and GAUGE in text and "tuneloop_spool_bytes" in text


def test_metrics_ask_for_a_token_when_told_to(proxy_factory: Callable[..., ProxyServer]
                                              ) -> None:
    proxy = proxy_factory(metrics_auth="token", metrics_token=METRICS_TOKEN)
    for token in (None, "wrong-token", METRICS_TOKEN + "x"):
        answer = proxy.http().get("/metrics", headers={} if token is None else
                                  {"authorization": f"Bearer {token}"})
        assert answer.status_code == 401, token
        error = answer.json()["error"]  # OpenAI-shaped, and no figure leaks
        assert error["type"] and "bearer token" in error["message"]
        assert GAUGE not in answer.text
    for token in (METRICS_TOKEN, REVIEWER_TOKEN, ADMIN_TOKEN):
        status, text = scrape(proxy, token)
        assert status == 200 and GAUGE in text, token
    # the metrics token reads /metrics and nothing else
    admin = proxy.http().get("/admin/routes",
                             headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    assert admin.status_code == 401


def test_reviewer_or_admin_token_without_a_metrics_token(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    proxy = proxy_factory(metrics_auth="token")
    assert scrape(proxy)[0] == 401
    assert scrape(proxy, REVIEWER_TOKEN)[0] == 200


def test_a_metrics_token_with_open_metrics_is_refused() -> None:
    with pytest.raises(ConfigError, match="metrics_auth"):
        load_settings(metrics_token=METRICS_TOKEN)
    with pytest.raises(ConfigError, match="metrics_auth"):
        load_settings(metrics_auth="sometimes")
