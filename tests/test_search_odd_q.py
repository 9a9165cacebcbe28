"""Odd values of the list filters (r12u LOW 5): an empty q is refused like a blank one, not
taken as no search; a q (or other text filter) that is not a string in a JSON filter is a 400
naming the field; a filter given twice in a query string is a 400, not one of the two."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from exporter.datasets import parse_filters
from tests.conftest import ADMIN_TOKEN, ProxyServer
from tests.test_search_languages import item, load, opened
from tuneloop.client import AdminClient
from tuneloop.errors import BadRequest, DatasetError

HEADERS = {"authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def loaded(store: str, proxy_factory: Any) -> ProxyServer:
    with opened(store) as con:
        load(con, [item(k, f"where is my refund number {k}", "it shipped") for k in range(5)])
    server: ProxyServer = proxy_factory()
    return server


def _error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def test_an_empty_q_is_refused_like_a_blank_one(loaded: ProxyServer) -> None:
    with httpx.Client(base_url=loaded.url, headers=HEADERS, timeout=30) as http:
        for q in ("", "   "):
            queue = _error(http.post("/admin/queue/next",
                                     json={"reviewer": "ann", "filter": {"q": q}}))
            assert queue["param"] == "q" and "at least one word" in queue["message"]
            bulk = _error(http.post("/admin/interactions/bulk-review", json={
                "action": "approve", "reviewer": "ann", "filter": {"q": q}}))
            assert "at least one word" in bulk["message"]
            for path, params in (("/admin/interactions", {"q": q}),
                                 ("/admin/queue/progress", {"q": q, "reviewer": "ann"})):
                listed = _error(http.get(path, params=params))
                assert "at least one word" in listed["message"]
        # no q at all is no search: every item
        assert len(http.get("/admin/interactions").json()["items"]) == 5
    with AdminClient(loaded.url, token=ADMIN_TOKEN) as client:
        with pytest.raises(BadRequest, match="at least one word"):
            client.search("")
        assert client.next_item(reviewer="ann")["item"] is not None


@pytest.mark.parametrize("value", [123, 1.5, True])
@pytest.mark.parametrize("key", ["q", "q_in", "model", "tag"])
def test_a_text_filter_that_is_not_a_string_is_refused(
        loaded: ProxyServer, key: str, value: Any) -> None:
    with httpx.Client(base_url=loaded.url, headers=HEADERS, timeout=30) as http:
        queue = _error(http.post("/admin/queue/next",
                                 json={"reviewer": "ann", "filter": {key: value}}))
        assert f"filter.{key} must be a string" in queue["message"]
        bulk = _error(http.post("/admin/interactions/bulk-review", json={
            "action": "approve", "reviewer": "ann", "filter": {"review": "pending", key: value}}))
        assert f"filter.{key} must be a string" in bulk["message"]
        # numbers and booleans still fill the filters that take them
        answer = http.post("/admin/queue/next", json={"reviewer": "ann", "filter": {
            "q": "refund", "status_code": 200, "min_score": -1, "has_error": False,
            "trainable": True}})
        assert answer.status_code == 200, answer.text


TWICE = [("q", ("refund", "number")), ("model", ("m", "n")), ("review", ("pending", "approved"))]


@pytest.mark.parametrize("path, key, values", [
    *[("/admin/interactions?", key, values) for key, values in TWICE],
    # the progress counts the pending queue: its review is set by the server, not the caller
    *[("/admin/queue/progress?reviewer=ann&", key, values) for key, values in TWICE[:2]]])
def test_a_filter_given_twice_is_refused(loaded: ProxyServer, path: str, key: str,
                                         values: tuple[str, str]) -> None:
    query = "&".join(f"{key}={v}" for v in values)
    with httpx.Client(base_url=loaded.url, headers=HEADERS, timeout=30) as http:
        error = _error(http.get(path + query))
        assert "more than once" in error["message"], error


@pytest.mark.parametrize("query", ["limit=1&limit=2", "cursor=a&cursor=b"])
def test_a_page_parameter_given_twice_is_refused(loaded: ProxyServer, query: str) -> None:
    with httpx.Client(base_url=loaded.url, headers=HEADERS, timeout=30) as http:
        error = _error(http.get("/admin/interactions?" + query))
        assert "more than once" in error["message"]
        one = http.get("/admin/interactions?limit=1")
        assert one.status_code == 200 and len(one.json()["items"]) == 1


@pytest.mark.parametrize("pair", ["q=", "q=  ", "tag="])
def test_the_cli_refuses_a_filter_without_a_value(pair: str) -> None:
    """`--filter q=` selected as if no search were given (every approved item)."""
    with pytest.raises(DatasetError, match="has no value"):
        parse_filters([pair])


@pytest.mark.parametrize("query", [
    "since=2020-01-01T00:00:00Z&since=2030-01-01T00:00:00Z",
    "until=2020-01-01T00:00:00Z&until=2030-01-01T00:00:00Z"])
def test_a_time_given_twice_is_refused_by_stats_as_by_the_list(loaded: ProxyServer,
                                                               query: str) -> None:
    """r12x2 LOW 4: /admin/stats took the last `since`; every endpoint reads a one-value
    parameter through the same helper (proxy.admin.common.one_value) and refuses a repeat."""
    with httpx.Client(base_url=loaded.url, headers=HEADERS, timeout=30) as http:
        for path in ("/admin/stats?", "/admin/interactions?"):
            error = _error(http.get(path + query))
            assert "more than once" in error["message"], (path, error)
        assert http.get("/admin/stats?" + query.split("&")[0]).status_code == 200
