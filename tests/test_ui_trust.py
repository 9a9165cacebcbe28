"""The review app under an outside reviewer's attacks (UIREVIEW_11): a refused action can be
tried again, sessions end everywhere on sign-out or expiry, password guessing is limited,
undo brings the item back, and a signed-out deep link survives the sign-in."""

from __future__ import annotations

from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from tests.conftest import ProxyServer
from tests.test_review_api import logged
from tests.test_ui_app import app, button  # noqa: F401  (the fixture)

__all__ = ["app"]


def test_a_claimed_refusal_can_be_re_applied(app: Callable[..., AppTest],  # noqa: F811
                                             proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "held by bob")
    bob = proxy.admin()
    ann = app("ann")
    bob.release(item_id, reviewer="ann")  # the queue claimed it for ann; she moved on
    bob.claim(item_id, reviewer="bob")
    ann.session_state["item_id"] = item_id
    ann.switch_page("views/item.py").run()
    button(ann, "Approve").click().run()
    assert any("Another reviewer holds this item" in w.value for w in ann.warning)
    button(ann, "Re-apply mine").click().run()  # bob still holds it: refused again, and said
    assert not ann.exception
    assert any("Another reviewer holds this item" in w.value for w in ann.warning)
    assert bob.interaction(item_id)["revision"] == 0
    bob.release(item_id, reviewer="bob")
    button(ann, "Re-apply mine").click().run()  # free now: sent, and recorded
    assert not ann.exception
    item = bob.interaction(item_id)
    assert (item["review"], item["revision"]) == ("approved", 1)
    assert [r["reviewer"] for r in item["revisions"]] == ["ann"]


def test_an_action_after_a_kept_claimed_refusal_is_sent(app: Callable[..., AppTest],  # noqa: F811
                                                        proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "held then free")
    admin = proxy.admin()
    ann = app("ann")
    admin.release(item_id, reviewer="ann")
    admin.claim(item_id, reviewer="bob")
    ann.session_state["item_id"] = item_id
    ann.switch_page("views/item.py").run()
    button(ann, "Approve").click().run()
    button(ann, "Keep the current one").click().run()
    admin.release(item_id, reviewer="bob")  # bob skipped it: still revision 0
    button(ann, "Approve").click().run()
    assert not ann.exception
    assert admin.interaction(item_id)["review"] == "approved"
