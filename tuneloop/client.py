"""A typed client of the admin API, for the CLI, the UI and the exporter.

Errors come back as the domain errors of `tuneloop.errors`, chosen by HTTP status.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from tuneloop.client_review import ReviewMethods
from tuneloop.client_routes import RouteMethods
from tuneloop.client_templates import TemplateMethods
from tuneloop.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    NotTrainable,
    PayloadTooLarge,
    PreconditionRequired,
    StorageError,
    TuneloopError,
    Unauthorized,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from tuneloop.names import dataset_name

_BY_STATUS: dict[int, type[TuneloopError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: PayloadTooLarge, 422: NotTrainable, 428: PreconditionRequired,
    502: UpstreamUnreachable, 503: StorageError, 504: UpstreamTimeout,
}


class ServerUnreachable(TuneloopError):
    """No tuneloop server answers at the API address."""

    exit_code = 6
    code = "server_unreachable"


class AdminClient(ReviewMethods, RouteMethods, TemplateMethods):
    """The admin API; the review methods (queue, claims, actions, progress) come from
    `tuneloop.client_review.ReviewMethods`, the route ones (promote, rollback, canary) from
    `tuneloop.client_routes.RouteMethods`, the prompt-template ones from
    `tuneloop.client_templates.TemplateMethods`."""

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
        response = self.send(method, path, json=json, params=params)
        if not response.content:
            return None
        return response.json()

    def send(self, method: str, path: str, *, json: Any = None,
             params: Mapping[str, Any] | None = None) -> httpx.Response:
        """The successful response itself (its headers too); errors raised as `request`."""
        clean = _query_params(params)
        try:
            response = self._http.request(method, path, json=json, params=clean)
        except UnicodeEncodeError as exc:  # a lone surrogate in the JSON body
            raise BadRequest(f"the request is not valid text: {exc.reason} at character "
                             f"{exc.start} of a field") from exc
        except httpx.ConnectError as exc:
            raise ServerUnreachable(f"no tuneloop server answers at {self.api}") from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"the tuneloop server at {self.api} timed out") from exc
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    def stream_lines(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                     content: Iterable[bytes] | None = None,
                     headers: Mapping[str, str] | None = None) -> Iterator[bytes]:
        """The response body's lines as they arrive (bodies of any size in bounded memory);
        `content` streams the request body the same way."""
        clean = _query_params(params)
        try:
            with self._http.stream(method, path, params=clean, content=content,
                                   headers=headers) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_from(response)
                pending = b""
                for chunk in response.iter_bytes():
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    yield from (line for line in lines if line)
                if pending:
                    yield pending
        except httpx.ConnectError as exc:
            raise ServerUnreachable(f"no tuneloop server answers at {self.api}") from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"the tuneloop server at {self.api} timed out") from exc
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"the connection to {self.api} broke: {exc}") from exc

    def stats(self, since: str | None = None, until: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/admin/stats",
                                              params={"since": since, "until": until})
        return result

    def usage(self, ids: Sequence[str]) -> dict[str, Any]:
        """How many of these interactions (at most 1000) are logged, and their summed cost."""
        result: dict[str, Any] = self.request("POST", "/admin/interactions/usage",
                                              json={"ids": list(ids)})
        return result

    def sql(self, sql: str, max_rows: int = 10_000) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/admin/sql",
                                              json={"sql": sql, "max_rows": max_rows})
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

    def compact(self) -> dict[str, Any]:
        """Rewrite the server's database file without deleted rows' bytes (admin token)."""
        result: dict[str, Any] = self.request("POST", "/admin/compact")
        return result

    # -- keys ------------------------------------------------------------------------------
    def create_key(self, name: str, feedback_relay: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/admin/keys", json={
            "name": name, "feedback_relay": feedback_relay})
        return result

    def list_keys(self) -> list[dict[str, Any]]:
        """The issued keys (no plaintext), each with its `rotated_from`."""
        items: list[dict[str, Any]] = self.request("GET", "/admin/keys")["items"]
        return items

    def revoke_key(self, key_id: str) -> None:
        self.request("DELETE", f"/admin/keys/{key_id}")

    def rotate_key(self, key_id: str, grace_hours: float = 0.0) -> dict[str, Any]:
        """The key's successor (its plaintext in `key`, once); the old key revoked now or
        after `grace_hours`; a canary counts the successor in the old key's stratum."""
        result: dict[str, Any] = self.request("POST", f"/admin/keys/{key_id}/rotate",
                                              json={"grace_hours": grace_hours})
        return result

    # -- datasets --------------------------------------------------------------------------
    def dataset_examples(self, filter: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """The examples a filter selects, streamed (see storage.dataset_examples). Raises
        ServerUnreachable if the stream ends without its end line (it was cut)."""
        for line in self.stream_lines("GET", "/admin/datasets/examples", params=filter):
            item = orjson.loads(line)
            if "interaction_id" in item:
                yield item
            elif item.get("end") is True:
                return
            elif "error" in item:
                error = item["error"]
                raise TuneloopError(f"the example stream failed: {error.get('message')}",
                                    code=error.get("code"))
        raise ServerUnreachable(f"the example stream from {self.api} was cut short")

    def record_dataset(self, header: Mapping[str, Any], items: Iterable[bytes], *,
                       reviewer: str | None = None) -> dict[str, Any]:
        """Record a snapshot: the header, then lineage lines (bytes, newline-terminated),
        streamed; returns the snapshot with its version. `reviewer` names the person recording
        it (stored as `created_by`; default: this client's actor)."""
        head = dict(header) if reviewer is None else {**header, "reviewer": reviewer}

        def body() -> Iterator[bytes]:
            yield orjson.dumps(head, option=orjson.OPT_APPEND_NEWLINE)
            yield from items

        lines = list(self.stream_lines("POST", "/admin/datasets", content=body(),
                                       headers={"content-type": "application/x-ndjson"}))
        result: dict[str, Any] = orjson.loads(b"\n".join(lines))
        return result

    def datasets(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/admin/datasets")
        return result

    def dataset_versions(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/admin/datasets/{_name(name)}")
        return result

    def dataset(self, name: str, version: int) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "GET", f"/admin/datasets/{_name(name)}/{int(version)}")
        return result

    def dataset_items(self, name: str, version: int, *, split: str | None = None,
                      limit: int = 1000, offset: int = 0) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "GET", f"/admin/datasets/{_name(name)}/{int(version)}/items",
            params={"split": split, "limit": limit, "offset": offset})
        return result

    def trace(self, name: str, split: str, line: int, *,
              version: int | None = None) -> dict[str, Any]:
        """Which interaction and revision a line of an exported file came from."""
        result: dict[str, Any] = self.request("GET", "/admin/datasets/trace", params={
            "name": name, "version": version, "split": split, "line": line})
        return result

    # -- fine-tuning jobs ------------------------------------------------------------------
    def check_job(self, dataset_id: str | None = None) -> None:
        """Raises Forbidden unless this token may start fine-tuning (nothing is recorded)."""
        self.request("POST", "/admin/jobs", json={"dry_run": True, "dataset_id": dataset_id})

    def record_job(self, job: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/admin/jobs", json=dict(job))
        return result

    def update_job(self, job_id: str, **fields: Any) -> dict[str, Any]:
        """status, fine_tuned_model, error, finished_at, trained_tokens, training_cost_usd,
        last_event_id, curves, events."""
        result: dict[str, Any] = self.request("PATCH", f"/admin/jobs/{_segment(job_id)}",
                                              json=fields)
        return result

    def jobs(self, status: str | None = None, limit: int = 50) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/admin/jobs",
                                              params={"status": status, "limit": limit})
        return result

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/admin/jobs/{_segment(job_id)}")
        return result

    def job_events(self, job_id: str, *, after: int = 0, limit: int = 1000) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/admin/jobs/{_segment(job_id)}/events",
                                              params={"after": after, "limit": limit})
        return result


def _name(name: str) -> str:
    return _segment(dataset_name(name))


def _segment(value: str) -> str:
    """One URL path segment: nothing in a name or id can reach another path."""
    text = str(value)
    if text.strip(".") == "":  # `.` and `..` would be resolved away by the URL
        return text.replace(".", "%2E")
    return quote(text, safe="")


def _quote(segment: str) -> str:
    return quote(segment, safe="")


def _query_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parameters set; a text one that is not valid text (a lone surrogate, from a
    terminal's undecodable bytes) refused as the server would, not a UnicodeEncodeError."""
    clean = {k: v for k, v in (params or {}).items() if v is not None}
    for name, value in clean.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise BadRequest(f"{name} is not valid text: {exc.reason} at character "
                                 f"{exc.start}", param=name) from exc
    return clean


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
