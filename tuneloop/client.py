"""A typed client of the admin API, for the CLI, the UI and the exporter.

Errors come back as the domain errors of `tuneloop.errors`, chosen by HTTP status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from tuneloop.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    StorageError,
    TuneloopError,
    Unauthorized,
    UpstreamTimeout,
    UpstreamUnreachable,
)

_BY_STATUS: dict[int, type[TuneloopError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: PayloadTooLarge, 502: UpstreamUnreachable, 503: StorageError, 504: UpstreamTimeout,
}


class ServerUnreachable(TuneloopError):
    """No tuneloop server answers at the API address."""

    exit_code = 6
    code = "server_unreachable"


class AdminClient:
    def __init__(self, api: str, token: str | None, *, timeout_s: float = 60.0,
                 actor: str | None = None):
        headers = {"authorization": f"Bearer {token}"} if token else {}
        if actor:
            headers["x-tuneloop-actor"] = actor
        self.api = api.rstrip("/")
        self._http = httpx.Client(base_url=self.api, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, json: Any = None,
                params: Mapping[str, Any] | None = None) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, json=json, params=clean)
        except httpx.ConnectError as exc:
            raise ServerUnreachable(f"no tuneloop server answers at {self.api}") from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"the tuneloop server at {self.api} timed out") from exc
        if response.status_code >= 400:
            raise _error_from(response)
        if not response.content:
            return None
        return response.json()

    # -- interactions ----------------------------------------------------------------------
    def interactions(self, **filters: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/admin/interactions", params=filters)
        return result

    def interaction(self, interaction_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/admin/interactions/{interaction_id}")
        return result

    # -- review --------------------------------------------------------------------------
    def review(self, interaction_id: str, action: str, *, reviewer: str, expected_revision: int,
               reason: str | None = None,
               messages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """approve | reject | edit | needs_work | revise; a stale revision raises Conflict."""
        body: dict[str, Any] = {"action": action, "reviewer": reviewer,
                                "expected_revision": expected_revision}
        if reason is not None:
            body["reason"] = reason
        if messages is not None:
            body["messages"] = messages
        result: dict[str, Any] = self.request(
            "POST", f"/admin/interactions/{interaction_id}/review", json=body)
        return result

    def bulk_review(self, action: str, *, reviewer: str, ids: list[str] | None = None,
                    filter: Mapping[str, Any] | None = None, reason: str | None = None,
                    expected_revisions: Mapping[str, int] | None = None,
                    max_items: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"action": action, "reviewer": reviewer}
        if ids is not None:
            body["ids"] = ids
        if filter is not None:
            body["filter"] = dict(filter)
        for key, value in (("reason", reason), ("max_items", max_items),
                           ("expected_revisions", expected_revisions)):
            if value is not None:
                body[key] = value
        result: dict[str, Any] = self.request("POST", "/admin/interactions/bulk-review",
                                              json=body)
        return result

    def undo(self, interaction_id: str, *, reviewer: str,
             expected_revision: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"reviewer": reviewer}
        if expected_revision is not None:
            body["expected_revision"] = expected_revision
        result: dict[str, Any] = self.request(
            "POST", f"/admin/interactions/{interaction_id}/undo", json=body)
        return result

    def tag(self, interaction_id: str, *, reviewer: str, add: list[str] | None = None,
            remove: list[str] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/admin/interactions/{interaction_id}/tags",
            json={"reviewer": reviewer, "add": add or [], "remove": remove or []})
        return result

    def bulk_tags(self, ids: list[str], *, reviewer: str, add: list[str] | None = None,
                  remove: list[str] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", "/admin/interactions/bulk-tags",
            json={"ids": ids, "reviewer": reviewer, "add": add or [], "remove": remove or []})
        return result

    def stats(self, since: str | None = None, until: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/admin/stats",
                                              params={"since": since, "until": until})
        return result

    def sql(self, sql: str, max_rows: int = 10_000) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/admin/sql",
                                              json={"sql": sql, "max_rows": max_rows})
        return result

    # -- routes ----------------------------------------------------------------------------
    def routes(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/admin/routes")
        return result

    def put_routes(self, table: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request("PUT", "/admin/routes", json=dict(table))
        return result

    def route_history(self, alias: str | None = None) -> list[dict[str, Any]]:
        result: dict[str, Any] = self.request("GET", "/admin/routes/history",
                                              params={"alias": alias})
        return list(result["items"])

    def promote(self, alias: str, model: str, *, canary: float = 100.0,
                provider: str | None = None, base_url: str | None = None,
                api_key_env: str | None = None, prompt_suffix: str | None = None,
                stop: str | list[str] | None = None, keep_fallbacks: bool = True,
                previous_as_fallback: bool = True) -> dict[str, Any]:
        """Route `canary` percent of the alias's traffic to `model` (100: all of it, with the
        previous target as a fallback). Admin token only."""
        body: dict[str, Any] = {"model": model, "canary": canary,
                                "keep_fallbacks": keep_fallbacks,
                                "previous_as_fallback": previous_as_fallback}
        for key, value in (("provider", provider), ("base_url", base_url),
                           ("api_key_env", api_key_env), ("prompt_suffix", prompt_suffix),
                           ("stop", stop)):
            if value is not None:
                body[key] = value
        result: dict[str, Any] = self.request("POST", f"/admin/routes/{_quote(alias)}/promote",
                                              json=body)
        return result

    def rollback(self, alias: str) -> dict[str, Any]:
        """Restore the route before the latest promotion. Admin token only."""
        result: dict[str, Any] = self.request("POST", f"/admin/routes/{_quote(alias)}/rollback")
        return result

    def route_health(self, alias: str, since: str | None = None,
                     until: str | None = None) -> dict[str, Any]:
        """Per target of the alias: requests, error rate, feedback, latency p50 (production
        traffic since the latest promotion, or `since`)."""
        result: dict[str, Any] = self.request("GET", f"/admin/routes/{_quote(alias)}/health",
                                              params={"since": since, "until": until})
        return result

    # -- evaluations -----------------------------------------------------------------------
    def create_eval_run(self, *, candidate: str, baseline: str, scorer: str,
                        dataset: str | None = None, threshold: float | None = None,
                        cycle_run_id: str | None = None) -> dict[str, Any]:
        body = {"candidate": candidate, "baseline": baseline, "scorer": scorer,
                "dataset": dataset, "threshold": threshold, "cycle_run_id": cycle_run_id}
        result: dict[str, Any] = self.request(
            "POST", "/admin/evals", json={k: v for k, v in body.items() if v is not None})
        return result

    def finish_eval_run(self, run_id: str, *, status: str,
                        report: Mapping[str, Any] | None = None,
                        error: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"status": status}
        if report is not None:
            body["report"] = dict(report)
        if error is not None:
            body["error"] = error
        result: dict[str, Any] = self.request("POST", f"/admin/evals/{_quote(run_id)}/report",
                                              json=body)
        return result

    def eval_runs(self, limit: int = 50, cycle_run_id: str | None = None) -> list[dict[str, Any]]:
        result: dict[str, Any] = self.request(
            "GET", "/admin/evals", params={"limit": limit, "cycle_run_id": cycle_run_id})
        return list(result["items"])

    def eval_run(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/admin/evals/{_quote(run_id)}")
        return result

    # -- the scheduled cycle -----------------------------------------------------------------
    def acquire_cycle_lease(self, cycle: str, holder: str, ttl_s: float) -> dict[str, Any]:
        """Take or renew the cycle's lease; Conflict while another holder's is live."""
        result: dict[str, Any] = self.request("POST", f"/admin/cycle-leases/{_quote(cycle)}",
                                              json={"holder": holder, "ttl_s": ttl_s})
        return result

    def release_cycle_lease(self, cycle: str, holder: str) -> None:
        self.request("DELETE", f"/admin/cycle-leases/{_quote(cycle)}",
                     params={"holder": holder})

    def create_cycle_run(self, cycle: str, holder: str, first_step: str,
                         config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/admin/cycle-runs", json={
            "cycle": cycle, "holder": holder, "first_step": first_step,
            "config": None if config is None else dict(config)})
        return result

    def record_cycle_step(self, run_id: str, holder: str, step: str, status: str,
                          **fields: Any) -> dict[str, Any]:
        """fields: detail, state (merged), next_step, run_status, outcome, error."""
        result: dict[str, Any] = self.request(
            "POST", f"/admin/cycle-runs/{_quote(run_id)}/steps",
            json={"holder": holder, "step": step, "status": status, **fields})
        return result

    def cycle_runs(self, cycle: str | None = None, status: str | None = None,
                   limit: int = 50) -> list[dict[str, Any]]:
        result: dict[str, Any] = self.request(
            "GET", "/admin/cycle-runs", params={"cycle": cycle, "status": status, "limit": limit})
        return list(result["items"])

    def cycle_run(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/admin/cycle-runs/{_quote(run_id)}")
        return result

    # -- governance ------------------------------------------------------------------------
    def forget(self, user: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/admin/forget", json={"user": user})
        return result

    def retention(self, days: int | None = None) -> dict[str, Any]:
        body = {} if days is None else {"days": days}
        result: dict[str, Any] = self.request("POST", "/admin/retention", json=body)
        return result

    # -- keys ------------------------------------------------------------------------------
    def create_key(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/admin/keys", json={"name": name})
        return result

    def revoke_key(self, key_id: str) -> None:
        self.request("DELETE", f"/admin/keys/{key_id}")


def _quote(segment: str) -> str:
    return quote(segment, safe="")


def _error_from(response: httpx.Response) -> TuneloopError:
    message = f"HTTP {response.status_code}"
    code: str | None = None
    try:
        error = response.json().get("error", {})
        message = error.get("message") or message
        code = error.get("code")
    except (ValueError, AttributeError):
        message = response.text[:500] or message
    cls = _BY_STATUS.get(response.status_code, TuneloopError)
    exc = cls(message, code=code if isinstance(code, str) else None)
    exc.status_code = response.status_code
    return exc
