"""The review side of the admin client: the queue and its claims, review actions, tags and
progress (see proxy/admin/review.py for the API). Mixed into `tuneloop.client.AdminClient`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote


class ReviewMethods:
    def request(self, method: str, path: str, *, json: Any = None,
                params: Mapping[str, Any] | None = None) -> Any:
        raise NotImplementedError  # AdminClient.request

    # -- interactions ----------------------------------------------------------------------
    def interactions(self, **filters: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/admin/interactions", params=filters)
        return result

    def search(self, q: str, *, q_in: str | None = None, **filters: Any) -> dict[str, Any]:
        """Interactions holding every term of `q`, newest first; `q_in`: conversation (the
        default: users' text and answers), answers, or all (with the system prompt)."""
        return self.interactions(q=q, **({"q_in": q_in} if q_in else {}), **filters)

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

    # -- the queue: claims and progress ------------------------------------------------------
    def next_item(self, *, reviewer: str, filter: Mapping[str, Any] | None = None,
                  skip: list[str] | None = None, progress: bool = False) -> dict[str, Any]:
        """Claim the reviewer's next queue item: `{"item": ... | None, "progress"?: ...}`.
        `filter` holds list filters (default: pending, trainable); ids in `skip` are passed
        over and their claims released."""
        body: dict[str, Any] = {"reviewer": reviewer, "progress": progress}
        if filter is not None:
            body["filter"] = dict(filter)
        if skip:
            body["skip"] = list(skip)
        result: dict[str, Any] = self.request("POST", "/admin/queue/next", json=body)
        return result

    def claim(self, interaction_id: str, *, reviewer: str) -> dict[str, Any]:
        """Take or renew the claim; Conflict (code `claimed`) while another reviewer holds it."""
        result: dict[str, Any] = self.request(
            "POST", f"/admin/interactions/{_segment(interaction_id)}/claim",
            json={"reviewer": reviewer})
        return result

    def release(self, interaction_id: str, *, reviewer: str) -> bool:
        """Release the reviewer's own claim; False when they held none."""
        result: dict[str, Any] = self.request(
            "POST", f"/admin/interactions/{_segment(interaction_id)}/release",
            json={"reviewer": reviewer})
        return bool(result["released"])

    def progress(self, *, reviewer: str, since: str | None = None,
                 **filters: Any) -> dict[str, Any]:
        """Exact counts: pending, untrainable, total, claimed_by_others, reviewed_by_you,
        reviewed (since `since`, default today UTC)."""
        result: dict[str, Any] = self.request(
            "GET", "/admin/queue/progress",
            params={**filters, "reviewer": reviewer, "since": since})
        return result


def _segment(value: str) -> str:
    return quote(str(value), safe="") if str(value).strip(".") else str(value).replace(".", "%2E")
