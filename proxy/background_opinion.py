"""Background second opinions of an open canary: the ones that judge a request after its app
got its answer (proxy/late_opinion.py starts them, storage/route_health.py reads them).

A second opinion cut by our own patience (`second_opinion_timeout_s`, or the client hanging up
while it was asked) says nothing about the request, nor does a client's hang-up before its
answer's first byte: so the second opinion goes on here, off the hot path (up to its attempt's
read timeout), and a hang-up gets the other arm asked here, its answer due within the time the
client waited. The request's row is logged at once, as always, with `route.late_opinion`
(`asked`; or `budget_full`, `too_quick`: none is asked, the row stays unjudged). The outcome
is a row of its own, spooled like every interaction (so both stores get it the same way):
traffic `probe`, `source_id` the judged request's id, the other arm's status, `finish`
`completed` when its answer started in time (else `timeout`, `upstream_error`,
`upstream_cut`), `ttfb_ms`, and no answer text: it is nobody's answer, never counted as a
production request of either arm nor training data.

At most `limit` run at once per process; one client key (`key_of`: the checked credential a
request came with, proxy/upstream_keys.py `client_credential`; all requests without one are one
key) gets more than `per_key` of them only while that leaves at least `per_key` free for the
others, so one app key flooding failures or hang-ups leaves room for another key's (skipped:
`budget_full` / `key_share_full`, counted by reason in
`tuneloop_background_opinions_skipped_total`). Only keys with an opinion in flight are
remembered, so at most `limit` of them. At shutdown the pending ones are cancelled and log
nothing, so their requests stay unjudged, as after a crash: an `asked` row also says by when
its opinion is due in the store (`late_due`, epoch seconds: its deadline, plus `grace_s` for
the spool's ingest), after which a missing opinion is lost, not pending
(storage/route_health.py). Each routed row says which client key sent it (`client_key`: the
same key as the share's, a digest keyed by a server secret, so the stored value tells nothing
of the credential), so one key's skipped opinions weigh no more than its share of the canary's
evidence (exporter/cycle_canary.py), and its requests no more than its own usual rate before
the canary (exporter/canary_strata.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from proxy.capture import Capture
from proxy.pricing import PriceMap
from proxy.redaction import Redactor
from proxy.reply import UpstreamCut, UpstreamReply
from tuneloop.config import Settings
from tuneloop.errors import TuneloopError, UpstreamTimeout

log = logging.getLogger("tuneloop.proxy")

LATE_OPINION = "late_opinion"
"""The route field of a request judged by a background opinion (or that could not be)."""
ASKED, BUDGET_FULL, TOO_QUICK = "asked", "budget_full", "too_quick"
KEY_SHARE_FULL = "key_share_full"
LATE_DUE = "late_due"
"""The route field of an `asked` row: when (epoch seconds) its opinion's row is due."""
CLIENT_KEY = "client_key"
"""The route field of a canary's row: which client key sent it (`BackgroundOpinions.key_of`)."""
PROBE_TRAFFIC = "probe"

Log = Callable[[dict[str, object]], bool]


def ingest_grace_s(settings: Settings) -> float:
    """How long after its deadline an opinion's row may take to reach the store: a few of
    the spool's ingests (an `asked` row's `late_due`, and route health's bound for rows
    without one)."""
    return 2.0 + 3 * settings.ingest_interval_ms / 1000


def answer_bound_s(connect_s: float, read_s: float) -> float:
    """The longest an opinion asked with its own timeouts may take to start its answer:
    connect, then its reply and its first chunk, each within the read timeout."""
    return connect_s + 2 * read_s


def key_of(credential: str, salt: bytes = b"") -> str:
    """Which client key a request came with, as the per-key share counts it: a digest of its
    checked credential (`client_credential`) keyed by `salt` (never the credential itself; ""
    is the anonymous client's key)."""
    return hashlib.blake2b(credential.encode(), digest_size=8, key=salt[:64],
                           person=b"tuneloop-key").hexdigest()


def key_salt(secret: str) -> bytes:
    """The client keys' digest key, derived from a server secret (the admin token, the same
    on every replica) for this one use."""
    return hashlib.blake2b(secret.encode(), person=b"tuneloop-keyid").digest()


class BackgroundOpinions:
    """The background opinions of one process, at most `limit` at once."""

    def __init__(self, limit: int, log_record: Log, prices: PriceMap, redactor: Redactor,
                 skipped: Counter, per_key: int | None = None, salt: bytes = b"",
                 grace_s: float = 5.0):
        self.limit = limit
        self.salt = salt
        self.grace_s = grace_s
        self.per_key = limit if per_key is None else per_key
        self._of_key: dict[str, int] = {}  # keys with an opinion in flight: at most `limit`
        self._log = log_record
        self._prices = prices
        self._redactor = redactor
        self._skipped = skipped
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def has_room(self) -> bool:
        return not self._closed and len(self._running) < self.limit

    def key_of(self, credential: str) -> str:
        return key_of(credential, self.salt)

    def skip(self, reason: str) -> str:
        """Count a background opinion not asked; the route's `late_opinion` then."""
        self._skipped.labels(reason).inc()
        return reason

    def take(self, probe: Capture, sending: Awaitable[UpstreamReply],
             deadline_s: float | None, key: str = "", bound_s: float = 0.0
             ) -> dict[str, object]:
        """Let `sending` (the other arm asked, already running or not) judge the request in
        the background: its answer must start within `deadline_s` (None: its own timeouts,
        at most `bound_s` from now). `key`: the request's client key (`key_of`). Returns the
        route's fields: `late_opinion` `asked` with its `late_due`, or `budget_full` /
        `key_share_full` (then `sending` is cancelled)."""
        full = BUDGET_FULL if not self.has_room() else \
            KEY_SHARE_FULL if self._beyond_share(key) else None
        if full is not None:
            if isinstance(sending, asyncio.Future):
                sending.cancel()
            elif asyncio.iscoroutine(sending):
                sending.close()
            return {LATE_OPINION: self.skip(full)}
        task = asyncio.get_running_loop().create_task(self._judge(probe, sending, deadline_s),
                                                      name="tuneloop-background-opinion")
        self._running.add(task)
        self._of_key[key] = self._of_key.get(key, 0) + 1
        task.add_done_callback(lambda done: self._done(done, key))
        within = deadline_s if deadline_s is not None else bound_s
        return {LATE_OPINION: ASKED, LATE_DUE: round(time.time() + within + self.grace_s, 3)}

    def _beyond_share(self, key: str) -> bool:
        """`key` has its share in flight, and one more would leave less than a share free
        for the other keys (a key alone may use the rest: one app's own failures are judged
        as before, while a flood still leaves room for another key's)."""
        free_after = self.limit - len(self._running) - 1
        return self._of_key.get(key, 0) >= self.per_key and free_after < self.per_key

    def _done(self, task: asyncio.Task[None], key: str) -> None:
        self._running.discard(task)
        left = self._of_key.pop(key, 1) - 1
        if left > 0:
            self._of_key[key] = left

    async def _judge(self, probe: Capture, sending: Awaitable[UpstreamReply],
                     deadline_s: float | None) -> None:
        status: int | None = None
        finish, error = "timeout", None
        try:  # cancelled at shutdown: nothing is logged, the request stays unjudged
            async with asyncio.timeout(deadline_s):
                reply = await sending
                status = reply.status
                try:
                    if status < 400:
                        async for _first in reply.chunks():
                            break  # its answer started: all we wanted to know
                        probe.first_byte()
                        finish = "completed"
                    else:
                        finish, error = "upstream_error", f"HTTP {status}"
                finally:
                    reply.release()
        except TimeoutError:
            error = f"its answer did not start within {deadline_s:g} s (the client's wait)"
        except UpstreamTimeout as exc:
            error = exc.message
        except UpstreamCut as exc:
            finish, error = "upstream_cut", str(exc) or "the upstream cut its answer"
        except TuneloopError as exc:
            finish, error = "upstream_error", exc.message
        except Exception:  # a background task must not die unseen
            log.exception("background second opinion %s failed", probe.interaction_id)
            finish, error = "upstream_error", "the proxy hit an internal error"
        self._write(probe, status, finish, error)

    def _write(self, probe: Capture, status: int | None, finish: str, error: str | None) -> None:
        try:
            self._log(probe.record(status_code=status, response=None, finish=finish,
                                   error=error, prices=self._prices, redactor=self._redactor))
        except Exception:
            log.exception("could not log background second opinion %s", probe.interaction_id)

    async def close(self) -> None:
        """Cancel the pending ones (their requests stay unjudged)."""
        self._closed = True
        running = list(self._running)
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
