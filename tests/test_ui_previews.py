"""The review app with list previews (issue 12): an item bigger than the list's preview is
opened whole and edited whole, the original kept; an item past the server's
`item_full_max_chars` is shown cut, says it is too big to edit in the app, and is still
approved as logged. Streamlit's AppTest against a real proxy (DuckDB)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from storage.previews import CUT_MARK
from tests.conftest import ProxyServer
from tests.test_review_previews import big_text, log_big
from tests.test_ui_app import app, button  # noqa: F401  (the fixture, with this module's proxy)

FULL_MAX = 400_000


@pytest.fixture
def proxy(proxy_factory: Callable[..., ProxyServer]) -> ProxyServer:
    return proxy_factory(item_full_max_chars=FULL_MAX)


def answer_box(at: AppTest) -> list[str]:
    return [t.value for t in at.text_area if t.label == "Answer"]


def test_a_big_item_is_edited_whole_and_a_too_big_one_is_said_so(
        app: Callable[..., AppTest], proxy: ProxyServer) -> None:  # noqa: F811
    medium = "long question: " + "lorem ipsum " * 3_000  # 36,000 characters: a cut preview
    raw = proxy.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": medium}])
    medium_id = str(raw.headers["x-tuneloop-id"])
    proxy.wait_for("SELECT count(*) FROM interactions", lambda r: r[0][0] == 1)
    huge_id, huge = next(iter(log_big(proxy, 1, first=1).items()))  # 2 x 300,000 characters
    assert huge == big_text(0)
    listed = {i["id"]: i for i in proxy.admin().interactions(compact=True)["items"]}
    assert listed[medium_id]["truncated"] and listed[huge_id]["truncated"]

    at = app("ann")
    at.switch_page("views/browse.py").run()
    assert not at.exception, at.exception
    at.session_state["item_id"] = medium_id
    at.switch_page("views/item.py").run()
    assert not at.exception, at.exception
    assert answer_box(at) == ["echo: " + medium]  # whole, not the list's preview
    next(t for t in at.text_area if t.label == "Answer").input("a shorter answer")
    button(at, "Save edit and approve").click().run()
    item = proxy.admin().interaction(medium_id)
    assert item["review"] == "approved" and item["current"][-1]["content"] == "a shorter answer"
    assert item["original"] == [{"role": "user", "content": medium},
                                {"role": "assistant", "content": "echo: " + medium}]

    at.session_state["item_id"] = huge_id
    at.switch_page("views/item.py").run()
    assert not at.exception, at.exception
    assert any("too big to show whole or to edit in the app" in w.value for w in at.warning)
    assert answer_box(at) == []  # no editor: an edit would start from cut text
    assert "echo: " + huge[:100] not in str([t.value for t in at.text_area])
    button(at, "Approve").click().run()
    item = proxy.admin().interaction(huge_id)
    assert item["review"] == "approved" and item["too_big"]
    assert item["current"][-1]["content"].endswith(CUT_MARK)
    stored = proxy.sql(f"SELECT length(request::VARCHAR) FROM interactions WHERE id = '{huge_id}'")
    assert stored[0][0] > 300_000
