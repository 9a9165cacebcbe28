"""The prompt-template side of the admin client (see proxy/admin/templates_api.py): candidate
templates found in traffic, freezing one, reading frozen ones. Mixed into
`tuneloop.client.AdminClient`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from tuneloop.prompt_template import PromptTemplate, parse_ref


class TemplateMethods:
    def request(self, method: str, path: str, *, json: Any = None,
                params: Mapping[str, Any] | None = None) -> Any:
        raise NotImplementedError  # AdminClient.request

    def template_candidates(self, alias: str, *, limit: int | None = None,
                            threshold: float | None = None,
                            max_bytes: int | None = None) -> dict[str, Any]:
        """The prompt parts the newest `limit` production requests to `alias` (an alias or a
        model name) share: `{"sample", "threshold", "candidates": [...]}`."""
        result: dict[str, Any] = self.request(
            "GET", "/admin/template-candidates",
            params={"alias": alias, "limit": limit, "threshold": threshold,
                    "max_bytes": max_bytes})
        return result

    def freeze_template(self, name: str, parts: Mapping[str, Any] | None = None, *,
                        alias: str | None = None, candidate: str | None = None,
                        limit: int | None = None, threshold: float | None = None,
                        max_bytes: int | None = None) -> dict[str, Any]:
        """Freeze the next version of `name` (admin token only): the candidate discovery showed
        with id `candidate` for `alias` (refused with Conflict when it is no longer offered;
        `limit`, `threshold`, `max_bytes`: as it was listed), or `parts` written by hand."""
        body: dict[str, Any] = {"name": name}
        for key, value in (("parts", dict(parts) if parts is not None else None),
                           ("alias", alias), ("candidate", candidate), ("limit", limit),
                           ("threshold", threshold), ("max_bytes", max_bytes)):
            if value is not None:
                body[key] = value
        result: dict[str, Any] = self.request("POST", "/admin/templates", json=body)
        return result

    def templates(self, alias: str | None = None) -> list[dict[str, Any]]:
        """Every frozen version (of templates found for `alias`), by name, newest first (all
        the pages)."""
        items: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            page: dict[str, Any] = self.request(
                "GET", "/admin/templates", params={"alias": alias, "offset": offset or None})
            items += page["items"]
            offset = page.get("next_offset")
        return items

    def template(self, ref: str) -> dict[str, Any]:
        """One frozen version: `name-vN`, or `name` for the newest."""
        parse_ref(ref)  # a bad name fails here, before any request
        result: dict[str, Any] = self.request("GET", f"/admin/templates/{quote(ref, safe='')}")
        return result

    def prompt_template(self, ref: str) -> PromptTemplate:
        """The frozen template `ref` names, ready to match and strip with."""
        item = self.template(ref)
        return PromptTemplate.from_dict({**item["parts"], "name": item["name"],
                                         "version": item["version"]})
