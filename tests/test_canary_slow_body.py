"""A hang-up's background second opinion gets no longer than the drawn arm had (r14 #1).

The wait W the other arm's answer is due within was counted from the request's headers, before
the body was read. An app key that sent its body slowly (1.5 s), waited 0.4 s and hung up gave
the drawn arm 0.4 s and the other arm 1.9 s: requests slow on EVERY model (1 s), sent as the
canary's sticky users, became the canary's errors and rolled an even canary back. W now starts
when the drawn arm was asked."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import urlparse

from exporter.cycle_canary import judge_canary
from exporter.cycle_config import CanaryConfig
from tests.conftest import UPSTREAM_KEY, ProxyServer
from tests.test_canary_failures import ALIAS, CANARY, STABLE, health, users_on

SLOW_ON_EVERY_MODEL_MS = 1000


def slow_body_then_hang_up(base: str, user: str, drip_s: float, after_s: float) -> None:
    url = urlparse(base)
    assert url.hostname is not None and url.port is not None
    body = json.dumps({"model": ALIAS, "user": user,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    head = (f"POST {url.path.rstrip('/')}/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {UPSTREAM_KEY}\r\nContent-Type: application/json\r\n"
            f"x-fake-delay-ms: {SLOW_ON_EVERY_MODEL_MS}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(head)
        pieces = 6
        step = len(body) // pieces + 1
        for start in range(0, len(body), step):
            sock.sendall(body[start:start + step])
            time.sleep(drip_s / pieces)
        time.sleep(after_s)


def test_a_slowly_sent_body_does_not_make_requests_slow_everywhere_the_canarys_errors(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    proxy = proxy_factory(hangup_probe_min_s=0.2)
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    admin.promote(ALIAS, CANARY, canary=50)
    client = proxy.openai(timeout=20).with_options(max_retries=0)
    users, sent = users_on(proxy, client, CANARY, 12, "a")
    jobs = [user for user in users for _ in range(5)]
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda user: slow_body_then_hang_up(proxy.base_url, user, 1.5, 0.4),
                      jobs))
    rows = health(proxy, sent + len(jobs))
    verdict = judge_canary(rows[CANARY], rows[STABLE], CanaryConfig(), timedelta(hours=1))
    assert rows[CANARY]["errors"] == 0, rows[CANARY]
    assert verdict.verdict != "rollback", verdict
