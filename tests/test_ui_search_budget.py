"""A search the server refuses for its page budget (`search_too_broad`) reads in the review app
as a query to narrow, on Browse and Queue, not as the admin API being down (r12v MED 4)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from curation_ui.workbench import progress_line
from tests.conftest import ProxyServer, both_stores
from tests.test_review_api import logged
from tests.test_ui_app import app  # noqa: F401  (the fixture)

pytestmark = both_stores


@pytest.fixture
def proxy(proxy_factory: Callable[..., ProxyServer]) -> ProxyServer:
    return proxy_factory(search_page_budget_s=1e-6)  # every page of a search is past it


@pytest.mark.parametrize("page", ["views/browse.py", "views/queue.py"])
def test_a_search_past_its_budget_reads_as_too_broad(app: Callable[..., AppTest],  # noqa: F811
                                                     proxy: ProxyServer, page: str) -> None:
    logged(proxy, "my refund please", "done")
    at = app("ann")
    at.switch_page(page).run()
    next(t for t in at.text_input if t.label == "Search words").input("refund")
    at.run()
    assert not at.exception, at.exception
    shown = [e.value for e in at.error]
    assert any(m.startswith("Search too broad") for m in shown), shown
    assert not any("did not answer" in m for m in shown), shown


def test_counts_cut_short_say_so() -> None:
    counts = {"pending": 40, "total": 90, "reviewed_by_you": 3, "exact": False}
    assert "counts so far" in progress_line(counts, 0)
    assert progress_line(counts, 0).startswith("40+ of 90+ pending")  # r12u MED 2
    assert "counts so far" not in progress_line({**counts, "exact": True}, 0)
