"""One logged request from start to end, owned by one object: an `Exchange`.

`run` reads top to bottom: read and check the body (`proxy.body`), read the client's headers,
choose the plan (route, fallbacks), forward, then answer `plain` or `stream`; `log` spools the
interaction once, before the last bytes reach the client, and never fails the request.

What is logged is what the client saw: a client that hung up before its answer went out is
logged `client_disconnected` (a stream keeps only the chunks that were sent), `ttfb_ms` is when
the first byte of the answer went to the client, and `latency_ms` counts from the request's
arrival (body upload included). Whether the client is still there is asked of the ASGI channel
without waiting (`client_gone`), before each piece of the answer goes out; and while the proxy
waits on the upstream, one small task (`_until_gone`) waits on the channel: a client that hangs
up cancels the upstream call (the request task is cancelled, so the upstream connection is
closed, never pooled) and the interaction is logged `client_disconnected` (with `route.stalled_s`
when the upstream had been silent `upstream_stall_s`: proxy.silence). While a canary is open,
a hang-up before the answer's first byte reached the client has the other arm asked in the
background (proxy/late_opinion.py): would it have answered in the time the client waited?

An alias with an open canary gets a *covered* answer (`cover`, proxy/arm_cover.py): the client
is not told which arm answered; the capture still sees the upstream's own bytes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from proxy.arm_cover import ArmCover
from proxy.assemble import ASSEMBLERS, BodyDecoder
from proxy.background_opinion import CLIENT_KEY
from proxy.body import BodyLimits, parse_payload, read_body
from proxy.capture import Capture, parse_json
from proxy.context import ProxyContext
from proxy.forward import ID_HEADER, body_for, send_attempt, timeouts_for
from proxy.headers import client_meta, downstream_headers, with_body_user
from proxy.ids import uuid7
from proxy.incoming import API_PREFIX, client_gone, plain_path, upstream_path
from proxy.late_opinion import go_on_later, other_arm, probe_after_hangup
from proxy.reply import UpstreamCut, UpstreamReply
from proxy.routing import Attempt, Plan
from proxy.second_opinion import KEY_REFUSALS, Failover, awaited, refused_key, shares_key
from proxy.shared_state import record_digest
from proxy.silence import UpstreamSilence
from proxy.upstream_keys import client_credential, presented_credential
from tuneloop.errors import (
    RequestTimeout,
    TemplateMismatch,
    TuneloopError,
    UpstreamTimeout,
    UpstreamUnreachable,
)

log = logging.getLogger("tuneloop.proxy")
GONE = "the client closed the connection before the answer was sent"
CLIENT_CLOSED = 499


def _error_text(status: int, response: Any, raw: bytes) -> str | None:
    if status < 400:
        return None
    if isinstance(response, dict) and isinstance(response.get("error"), dict):
        message = response["error"].get("message")
        if isinstance(message, str):
            return message
    return raw[:500].decode("utf-8", "replace") or f"HTTP {status}"


def _event(exc: TuneloopError, cover: ArmCover | None) -> bytes:
    answer = exc.to_openai() if cover is None else cover.proxy_error(exc)
    return b"data: " + orjson.dumps(answer) + b"\n\n"


class Exchange:
    """One request to a logged endpoint: its context, the client's headers and meta, the
    capture of what crossed, and the plan it was sent by."""

    def __init__(self, ctx: ProxyContext, path: str, endpoint: str, scope: Scope,
                 receive: Receive, send: Send):
        self.started = time.perf_counter()
        self.drawn_asked_at: float | None = None  # when the drawn arm (attempt 0) was asked
        self.ctx = ctx
        self.path = path
        self.endpoint = endpoint
        self.scope = scope
        self.receive = receive
        self.send = send
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.capture: Capture | None = None
        self.plan: Plan | None = None
        self.cover: ArmCover | None = None  # an open canary's alias: the arm is not told
        self.answering = False
        """Whether the response has started (after that, no error answer is possible)."""
        self.watcher: asyncio.Task[None] | None = None
        self.left = False
        """Whether the client hung up while the proxy was waiting (see `watch`)."""
        self.left_at: float | None = None
        self.asked: dict[str, str] = {}
        """The headers the upstream is asked with (the arm cover's, when a canary is open)."""
        self.suffix = ""
        self.silence = UpstreamSilence()

    @functools.cached_property
    def client_key(self) -> str:
        """Which client key sent the request (the opinions' per-key share and a canary row's
        `client_key`): its credential checked by the proxy or by both canary arms' upstream,
        else the anonymous client's (proxy/upstream_keys.py); worked out once, when first
        needed."""
        plan = self.plan
        arms = [] if plan is None else \
            [plan.attempts[n].target for n in (0, other_arm(plan)) if n is not None]
        return self.ctx.opinions.key_of(client_credential(self.ctx.settings, self.headers, arms))

    def window_key(self, sticky_key: str | None) -> str:
        """Whose window of hot sticky keys the request counts in (proxy/hot_keys.py `HotKeys`):
        the digest of the credential it presents, checked or not. Not `client_key` (known
        only once the plan names the arms, and the anonymous client's for every key the arms
        never get): a window shared by many keys lets one cool another's hot ids (r14n HIGH
        1), and a made-up credential only gets a window of its own."""
        if sticky_key is None:
            return ""
        return self.ctx.opinions.key_of(presented_credential(self.ctx.settings, self.headers))

    def lane_key(self, status: int | None) -> str:
        """The client key listed with the row for the search indexer's lanes (storage.search_fair):
        `client_key`, routed or not; but a key the upstream refused (401/403, when the proxy
        does not check keys itself) tells nobody apart: each made-up key would be a lane of
        its own, so a client minting them would never be a heavy key. Those rows are the
        anonymous client's."""
        if status in KEY_REFUSALS and not self.ctx.settings.issue_keys:
            return self.ctx.opinions.key_of("")
        return self.client_key

    # -- the request, top to bottom -----------------------------------------------------------
    async def run(self) -> None:
        try:
            reply = await self.open()
            assert self.capture is not None
            self.ctx.metrics.count(self.endpoint, reply.status)
            if (self.capture.stream and reply.status == 200
                    and "text/event-stream" in reply.content_type):
                await self.stream(reply)
            else:
                await self.plain(reply)
        except asyncio.CancelledError:
            if not self.left:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # our own cancel: the client hung up, nothing to answer
            if self.capture is not None and not self.capture.logged:
                self.log(status=None, response=None, finish="client_disconnected", error=GONE)
                # counted as nginx does: 499, the client closed the connection first
                self.ctx.metrics.count(self.endpoint, CLIENT_CLOSED)
        except Exception as exc:
            if not isinstance(exc, TuneloopError):
                log.exception("unexpected error on %s", self.path)
                exc = TuneloopError("the proxy hit an internal error; it has been logged")
            if not self.answering:
                await self.fail(exc)
        finally:
            self.unwatch()

    # -- whether the client is still there while the upstream is asked ----------------------
    def watch(self) -> None:
        """Once the body is read: cancel this request's task if the client hangs up."""
        task = asyncio.current_task()
        if task is not None and self.watcher is None:
            self.watcher = asyncio.get_running_loop().create_task(self._until_gone(task))

    async def _until_gone(self, task: asyncio.Task[Any]) -> None:
        try:
            while (await self.receive())["type"] != "http.disconnect":
                pass  # nothing else can arrive once the body is read
        except Exception:
            return
        self.left, self.left_at = True, time.perf_counter()
        task.cancel()

    def unwatch(self) -> bool:
        """Stop watching (before the last piece of an answer: uvicorn's channel says
        `http.disconnect` once a response is complete); whether the client had left."""
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.cancel()
        return self.left

    async def open(self) -> UpstreamReply:
        """Check what the client sent, then forward it by the plan: the upstream's reply."""
        settings = self.ctx.settings
        simple = plain_path(self.scope, self.path) and not self.scope["query_string"]
        suffix = self.path[len(API_PREFIX):] if simple else upstream_path(self.scope)
        if settings.issue_keys:  # before the body: a stranger's 32 MiB is never read
            self.ctx.keys.check(self.headers)
            await record_digest(self.ctx, self.headers)  # a key older than its digests
        meta = client_meta(self.headers)
        body = await read_body(self.receive, self.headers, BodyLimits.logged(settings))
        payload = parse_payload(body, settings.max_json_depth)
        meta = with_body_user(meta, payload)
        self.plan = self.ctx.router.plan(payload.get("model"), meta.sticky_key,
                                         self.window_key(meta.sticky_key))
        self.cover = ArmCover.of(self.plan)
        stream = payload.get("stream") is True and self.endpoint != "embeddings"
        self.capture = Capture(uuid7(), self.endpoint, meta, body, payload, stream,
                               started=self.started)
        self.watch()
        reply = await self.forward(suffix, body, payload)
        return reply if self.cover is None else self.cover.check(reply)

    async def forward(self, suffix: str, body: bytes, payload: dict[str, Any]) -> UpstreamReply:
        """Each attempt of the plan in turn, as :class:`Failover` says: the next on a
        connection error, a timeout or a 5xx, an open canary's other arm on any failure of the
        primary (proxy.second_opinion). The primary's status, when another attempt answered,
        is in the row's `route.primary_status`."""
        assert self.capture is not None and self.plan is not None
        ctx, capture, plan = self.ctx, self.capture, self.plan
        failover = Failover(plan, capture)
        step: int | UpstreamReply = 0
        asked = self.headers if self.cover is None else self.cover.asked(self.headers)
        self.asked, self.suffix = asked, suffix
        while isinstance(step, int):
            number, attempt = step, plan.attempts[step]
            capture.upstream_model = attempt.target.model
            capture.provider = attempt.target.provider
            capture.route = failover.route(number)
            outgoing = body_for(attempt, self.endpoint, body, payload)
            capture.sent_request = outgoing.body if outgoing.transformed else None
            if outgoing.mismatch is not None:
                self.mismatched(attempt, outgoing.mismatch)
            if outgoing.stops_dropped and capture.route is not None:  # over OpenAI's 4
                capture.route["stops_dropped"] = list(outgoing.stops_dropped)
                ctx.metrics.stops_dropped.labels(plan.alias or "", attempt.target.model).inc()
            began = self.silence.heard()
            if number == 0:
                self.drawn_asked_at = began
            later = functools.partial(go_on_later, ctx, failover, self.client_key, number,
                                      outgoing, began) \
                if failover.bounded(number) else None  # a second opinion: waited for so long
            try:
                reply = await awaited(send_attempt(ctx, attempt, self.endpoint, asked,
                                                   suffix, outgoing.body, outgoing.payload,
                                                   timeouts_for(ctx, attempt)),
                                      later, ctx.settings.second_opinion_timeout_s)
            except (UpstreamUnreachable, UpstreamTimeout) as exc:
                step = failover.raised(number, exc)
            except BaseException:  # e.g. the client hung up during the second opinion
                failover.abandoned()  # logged as the primary's failure (see go_on_later)
                raise
            else:
                ctx.metrics.observe_upstream(self.endpoint, self.silence.heard() - began)
                key = refused_key(ctx, asked, attempt) \
                    if reply.status in KEY_REFUSALS and plan.alias is not None else None
                if key is not None and capture.route is not None:
                    capture.route["refused_key"] = key
                step = failover.answered(number, reply, key, key == "client" and shares_key(
                    ctx, asked, plan.attempts, number))
            if isinstance(step, int):
                ctx.metrics.fallbacks.labels(plan.alias or "").inc()
        return step

    def mismatched(self, attempt: Attempt, mismatch: TemplateMismatch) -> None:
        """The request does not hold its target's template: it goes to that target unstripped
        (proxy.transforms); counted, noted in the row's route, and logged (the 1st, 10th,
        100th... time per alias, target and template, so a changed app can't flood the log)."""
        assert self.capture is not None and self.capture.route is not None
        template = attempt.transforms.template if attempt.transforms else None
        ref = template.ref if template is not None else ""
        self.capture.route["template_mismatch"] = mismatch.part
        seen = self.ctx.metrics.template_mismatch(attempt.alias or "", attempt.target.model, ref)
        if seen == 10 ** (len(str(seen)) - 1):
            log.warning("alias %r: a request did not hold template %s of target %s (%s): sent "
                        "unstripped (%d so far; tuneloop_template_mismatches_total)",
                        attempt.alias, ref, attempt.target.model, mismatch.message, seen)

    # -- answers --------------------------------------------------------------------------------
    async def plain(self, reply: UpstreamReply) -> None:
        assert self.capture is not None
        try:
            raw = await reply.read()
        except UpstreamTimeout as exc:
            await self.fail(exc, finish="timeout")
            return
        except UpstreamCut as exc:
            await self.fail(UpstreamUnreachable(
                f"the upstream closed the connection mid-response: {exc}", code="upstream_cut"),
                finish="upstream_cut")
            return
        finally:
            reply.release()
        decoded = BodyDecoder(reply.content_encoding).decode(raw)
        response = parse_json(decoded)
        if self.cover is not None:  # the capture keeps the upstream's words, the client these
            raw = self.cover.answer(decoded, response)
        if response is None and decoded:
            response = {"unparsed_body": decoded[:10_000].decode("utf-8", "replace")}
        if self.unwatch() or client_gone(self.receive):
            self.log(status=reply.status, response=response, finish="client_disconnected",
                     error=GONE)
            return
        self.capture.first_byte()
        logged = self.log(status=reply.status, response=response,
                          finish="upstream_error" if reply.status >= 400 else "completed",
                          error=_error_text(reply.status, response, decoded))
        headers = downstream_headers(reply.headers) if self.cover is None else \
            self.cover.headers(reply.content_type, stream=False)
        if logged:
            headers.append((ID_HEADER, self.capture.interaction_id.encode()))
        await self.respond(reply.status, headers, raw)

    async def stream(self, reply: UpstreamReply) -> None:
        """Relay server-sent events chunk by chunk. A chunk is fed to the capture only when it
        is about to go out, so a client that left keeps only what it was sent; the interaction
        is spooled before the chunk that ends the stream."""
        capture = self.capture
        assert capture is not None
        assembler = ASSEMBLERS.get(self.endpoint, ASSEMBLERS["chat.completions"])(
            reply.content_encoding)

        def finish(kind: str, error: str | None = None) -> None:
            if assembler.error is not None and kind == "completed":
                kind, error = "upstream_error", str(assembler.error)[:2000]
            self.log(status=reply.status, response=assembler.result(), finish=kind, error=error)

        headers = downstream_headers(reply.headers) if self.cover is None else \
            self.cover.headers(reply.content_type, stream=True)
        covering = None if self.cover is None else self.cover.events(reply.content_encoding)
        if not capture.meta.no_log:
            headers.append((ID_HEADER, capture.interaction_id.encode()))
        ending: bytes = b""
        try:
            self.answering = True
            await self.send({"type": "http.response.start", "status": reply.status,
                             "headers": headers})
            try:
                async for chunk in reply.chunks():
                    if client_gone(self.receive):
                        finish("client_disconnected", GONE)
                        return
                    self.silence.heard()
                    assembler.feed(chunk)
                    capture.first_byte()
                    if assembler.done and not capture.logged:
                        finish("completed")
                    self.silence.client_turn()  # a client slow to read is no upstream stall
                    await self.send({"type": "http.response.body", "more_body": True,
                                     "body": chunk if covering is None else covering.feed(chunk)})
                    self.silence.heard()  # waiting on the upstream's next chunk from now
            except UpstreamTimeout as exc:
                finish("timeout", exc.message)
                ending = _event(exc, self.cover)
            except UpstreamCut as exc:
                cut = UpstreamUnreachable(f"the upstream cut the stream: {exc}",
                                          code="upstream_cut")
                finish("upstream_cut", cut.message)
                ending = _event(cut, self.cover)
            if not capture.logged:
                if assembler.done or self.endpoint not in ASSEMBLERS:
                    finish("completed")
                else:
                    cut = UpstreamUnreachable(
                        "the upstream ended the stream before its end marker",
                        code="upstream_cut")
                    finish("upstream_cut", cut.message)
                    ending = _event(cut, self.cover)
            self.unwatch()
            await self.send({"type": "http.response.body", "body": ending, "more_body": False})
        finally:
            if not capture.logged:  # cancelled, or the client's socket failed under us
                finish("client_disconnected", "the client closed the connection mid-stream")
            reply.release()

    async def fail(self, exc: TuneloopError, finish: str | None = None) -> None:
        """An error of the proxy's own, OpenAI-shaped; logged once the request was valid."""
        logged = False
        if self.capture is not None:
            if self.capture.route is not None:  # the canary's error test tells who answered
                self.capture.route["answered_by"] = "proxy"
            kind = finish or ("timeout" if isinstance(exc, UpstreamTimeout) else "upstream_error")
            logged = self.log(status=exc.status_code, response=exc.to_openai(), finish=kind,
                              error=exc.message)
            self.ctx.metrics.count(self.endpoint, exc.status_code)
        headers = [(b"content-type", b"application/json")]
        if isinstance(exc, RequestTimeout):  # the rest of a slow body is not worth waiting for
            headers.append((b"connection", b"close"))
        if logged and self.capture is not None:
            headers.append((ID_HEADER, self.capture.interaction_id.encode()))
        answer = exc.to_openai() if self.cover is None else self.cover.proxy_error(exc)
        await self.respond(exc.status_code, headers, orjson.dumps(answer))

    async def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        headers.append((b"content-length", str(len(body)).encode()))
        self.unwatch()
        self.answering = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    # -- the record -------------------------------------------------------------------------
    def log(self, *, status: int | None, response: Any, finish: str, error: str | None) -> bool:
        """Spool the interaction once. False when it was not logged (no-log, spool full, or a
        record that could not be built): never an exception, the client gets its answer."""
        capture = self.capture
        assert capture is not None
        if capture.logged:
            return True
        capture.logged = True
        if capture.meta.no_log:
            return False
        capture.client_key = self.lane_key(status)
        if capture.route is not None:
            # whose evidence this row is: one key's skipped opinions weigh at most its share,
            # and its requests count at most its share of the route's traffic before a canary
            # (exporter/canary_strata.py), so rows without a canary say it too
            capture.route[CLIENT_KEY] = self.client_key
        if finish == "client_disconnected" and capture.route is not None:
            stalled = self.silence.stalled_s(self.ctx.settings.upstream_stall_s)
            if stalled is not None:  # the client gave up on a stall, not a cancel
                capture.route["stalled_s"] = stalled
            if self.cover is not None and self.plan is not None \
                    and self.drawn_asked_at is not None:  # a canary is open, an arm was asked
                # the drawn arm's time, not the client's: a body sent slowly must not give
                # the other arm longer than the drawn one had (r14 #1)
                waited = (self.left_at or time.perf_counter()) - self.drawn_asked_at
                probe_after_hangup(self.ctx, self.plan, capture, self.asked, self.suffix, waited,
                                   self.client_key)
        try:
            record = capture.record(status_code=status, response=response, finish=finish,
                                    error=error, prices=self.ctx.prices,
                                    redactor=self.ctx.redactor)
            return self.ctx.writer.log(record)
        except Exception:
            log.exception("could not capture interaction %s (the client still gets its "
                          "answer; counted in tuneloop_capture_failures_total)",
                          capture.interaction_id)
            self.ctx.metrics.capture_failures.inc()
            return False


class LoggedEndpoint:
    """A logged endpoint as an ASGI app (the fast path calls it for POST; Starlette's router
    keeps it for the 405 on other methods)."""

    def __init__(self, path: str, endpoint: str):
        self.path = path
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: ProxyContext = scope["app"].state.ctx
        await Exchange(ctx, self.path, self.endpoint, scope, receive, send).run()
