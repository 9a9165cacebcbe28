"""Search on the Browse page (AppTest against a real proxy): Japanese without spaces, and the
"Search in" choice (users and answers by default; answers only; everything), on both stores."""

from __future__ import annotations

from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from tests.conftest import ProxyServer, both_stores
from tests.test_review_api import logged
from tests.test_ui_app import app  # noqa: F401  (the fixture)

pytestmark = both_stores


def test_browse_search_in_every_language_and_field(app: Callable[..., AppTest],  # noqa: F811
                                                   proxy: ProxyServer) -> None:
    japanese, english = logged(proxy, "パスワードを忘れました", "my password is brief")
    at = app("ann")
    at.switch_page("views/browse.py").run()

    def shown(q: str, searched: str = "users and answers") -> list[str]:
        next(t for t in at.text_input if t.label == "Search words").input(q)
        next(s for s in at.selectbox if s.label == "Search in").select(searched)
        at.run()
        assert not at.exception, at.exception
        return list(at.dataframe[0].value["id"]) if at.dataframe else []

    assert shown("パスワード") == [japanese]
    assert shown("brief") == [english]  # every item's system prompt is "be brief"
    assert shown("brief", "everything (with system prompts)") == [english, japanese]
    assert shown("echo", "answers only") == [english, japanese]  # the fake answers "echo: …"
    assert shown("password", "answers only") == [english]
