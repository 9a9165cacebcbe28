"""The routes side of the admin client: the route table, its history, promotions and
rollbacks, health, the open canary and savings (see proxy/admin/routes_api.py and
proxy/admin/promote_api.py). Mixed into `tuneloop.client.AdminClient`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import orjson


def _path(alias: str, action: str) -> str:
    return f"/admin/routes/{quote(alias, safe='')}/{action}"


class RouteMethods:
    def request(self, method: str, path: str, *, json: Any = None,
                params: Mapping[str, Any] | None = None) -> Any:
        raise NotImplementedError  # AdminClient.request

    def send(self, method: str, path: str, *, json: Any = None,
             params: Mapping[str, Any] | None = None) -> httpx.Response:
        raise NotImplementedError  # AdminClient.send

    # -- routes ----------------------------------------------------------------------------
    def routes(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/admin/routes")
        return result

    def routes_with_seq(self) -> dict[str, Any]:
        """`{"routes": the table, "seq": its version (for `put_routes(expect_seq=)`), "seqs":
        each alias's latest history seq}`."""
        result: dict[str, Any] = self.request("GET", "/admin/routes",
                                              params={"with_seq": "true"})
        return result

    def put_routes(self, table: Mapping[str, Any], *, expect_seq: int | None = None,
                   force: bool = False) -> dict[str, Any]:
        return self.put_routes_warned(table, expect_seq=expect_seq, force=force)[0]

    def put_routes_warned(self, table: Mapping[str, Any], *, expect_seq: int | None = None,
                          force: bool = False) -> tuple[dict[str, Any], list[str]]:
        """Replace the whole table; the table as set, and the server's warnings about it (a
        target at another host than the default upstream without a key variable gets no key
        at all). `expect_seq`: the table version read (`routes_with_seq`): Conflict
        `route_changed` when an alias this changes or deletes moved since; an alias with an
        open canary is changed or deleted only with `force` (Conflict `open_canary`)."""
        params = {"expect_seq": expect_seq, "force": "true" if force else None}
        response = self.send("PUT", "/admin/routes", json=dict(table), params=params)
        warnings = [str(orjson.loads(value))
                    for value in response.headers.get_list("x-tuneloop-warning")]
        result: dict[str, Any] = response.json()
        return result, warnings

    def route_history(self, alias: str | None = None) -> list[dict[str, Any]]:
        result: dict[str, Any] = self.request("GET", "/admin/routes/history",
                                              params={"alias": alias})
        return list(result["items"])

    def promote(self, alias: str, model: str, *, canary: float = 100.0,
                provider: str | None = None, base_url: str | None = None,
                api_key_env: str | None = None, prompt_suffix: str | None = None,
                stop: str | list[str] | None = None, strip_template: str | None = None,
                system_prompt: str | None = None, keep_fallbacks: bool = True,
                previous_as_fallback: bool = True,
                verdict: Mapping[str, Any] | None = None,
                drop_transforms: Sequence[str] = (),
                no_transforms: bool = False, expect_seq: int | None = None) -> dict[str, Any]:
        """Route `canary` percent of the alias's traffic to `model` (100: all of it, with the
        previous target as a fallback). Admin token only. `verdict`: the canary test's
        statistics behind the promotion, kept in the route history. `prompt_suffix`, `stop`,
        `strip_template` (`name-vN`) and `system_prompt` become the model's own transforms,
        replacing only those types among the ones it already has in the route; the others are
        kept unless dropped (`drop_transforms`: types; `no_transforms`: all of them).
        `expect_seq`: the route's `seq` read before deciding; Conflict `route_changed` when
        the route's history moved since."""
        body: dict[str, Any] = {"model": model, "canary": canary,
                                "keep_fallbacks": keep_fallbacks,
                                "previous_as_fallback": previous_as_fallback}
        for key, value in (("provider", provider), ("base_url", base_url),
                           ("api_key_env", api_key_env), ("prompt_suffix", prompt_suffix),
                           ("stop", stop), ("strip_template", strip_template),
                           ("system_prompt", system_prompt), ("verdict", verdict),
                           ("expect_seq", expect_seq)):
            if value is not None:
                body[key] = value
        if drop_transforms:
            body["drop_transforms"] = list(drop_transforms)
        if no_transforms:
            body["no_transforms"] = True
        result: dict[str, Any] = self.request("POST", _path(alias, "promote"),
                                              json=body)
        return result

    def rollback(self, alias: str, *, verdict: Mapping[str, Any] | None = None,
                 force: bool = False, expect_seq: int | None = None,
                 model: str | None = None) -> dict[str, Any]:
        """Undo the latest promotion (a canary is taken out of a route changed since; other
        changes since refuse with Conflict `route_edited` unless `force`). Admin token only.
        `verdict`: the canary test's statistics behind it, kept in the route history;
        `expect_seq` as for `promote`; `model`: Conflict `rollback_other_model` unless the
        promotion undone is that model's. Right after another rollback, Conflict
        `just_rolled_back` unless `model` or `force`. The result's `undone`: the promotion
        undone."""
        body: dict[str, Any] = {} if verdict is None else {"verdict": dict(verdict)}
        if model is not None:
            body["model"] = model
        if force:
            body["force"] = True
        if expect_seq is not None:
            body["expect_seq"] = expect_seq
        result: dict[str, Any] = self.request("POST", _path(alias, "rollback"),
                                              json=body)
        return result

    def route_health(self, alias: str, since: str | None = None, until: str | None = None,
                     max_votes_per_voter: int | None = None,
                     max_requests_per_user: int | None = None,
                     history_baseline: bool = False, by_key: bool = False,
                     skip_since: str | None = None, skip_until: str | None = None
                     ) -> dict[str, Any]:
        """Per target of the alias: requests, error rate (and the requests weighed per sticky
        user, one weighing at most `max_requests_per_user`), feedback (and its votes, one voter
        weighing at most `max_votes_per_voter`), latency p50 (production traffic since the
        latest promotion, or `since`). `history_baseline`: judged as the canary's baseline
        from before the canary (failures no second opinion judged are `opinions_missing`).
        `by_key`: each target's counts per client key too (`by_key`, the canary's strata).
        `skip_since`/`skip_until`: a part of the window left out (a re-opened canary's closed
        time)."""
        params: dict[str, Any] = {"since": since, "until": until,
                                  "max_votes_per_voter": max_votes_per_voter,
                                  "max_requests_per_user": max_requests_per_user}
        if history_baseline:
            params["history_baseline"] = "true"
        if by_key:
            params["by_key"] = "true"
        if skip_since is not None and skip_until is not None:
            params |= {"skip_since": skip_since, "skip_until": skip_until}
        result: dict[str, Any] = self.request("GET", _path(alias, "health"), params=params)
        return result

    def route_canary(self, alias: str) -> dict[str, Any]:
        """The alias's route, its open canary (the promotion episode: model, share, times; or
        None) and its `stable` model (the one it serves for sure, never an open canary), when
        the route last changed (`changed_at`), its history `seq` (for `expect_seq`),
        `changed_since_promotion` and `promotion`, the latest promotion not rolled back (what
        a rollback would undo; None when there is none)."""
        result: dict[str, Any] = self.request("GET", _path(alias, "canary"))
        return result

    def savings(self, alias: str, days: int | None = None,
                baseline: str | None = None) -> dict[str, Any]:
        """Per target of the alias over production traffic of the last `days` days (default
        7): tokens and cost per request, tokens and USD saved against the baseline per request
        and per day, break-even. Reviewer or admin token."""
        result: dict[str, Any] = self.request("GET", _path(alias, "savings"),
                                              params={"days": days, "baseline": baseline})
        return result
