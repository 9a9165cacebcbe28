"""The review app under an outside reviewer's attacks (UIREVIEW_11): a refused action can be
tried again, sessions end everywhere on sign-out or expiry, password guessing is limited,
undo brings the item back, and a signed-out deep link survives the sign-in."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from curation_ui.session import signer, ui_settings
from curation_ui.signin_limit import SignInLimiter
from tests.conftest import ProxyServer
from tests.test_review_api import logged
from tests.test_ui_app import APP, PASSWORD, app, button

__all__ = ["app"]


def test_a_claimed_refusal_can_be_re_applied(app: Callable[..., AppTest],
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


def test_an_action_after_a_kept_claimed_refusal_is_sent(app: Callable[..., AppTest],
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


def test_signing_out_elsewhere_ends_this_session_before_it_acts(
        app: Callable[..., AppTest], proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "two tabs")
    tab = app("ann")
    signer(ui_settings()).sign_out(tab.session_state["session_cookie"], now=int(time.time()))
    button(tab, "Approve").click().run()  # the fragment's callback runs first: nothing sent
    assert not tab.exception
    assert proxy.admin().interaction(item_id)["revision"] == 0
    assert any("Your sign-in has ended" in w.value for w in tab.warning)
    assert "reviewer" not in tab.session_state
    assert [t.label for t in tab.text_input][:2] == [
        "Your name (recorded with every review)", "Password"]


def test_an_expired_session_goes_back_to_the_sign_in(app: Callable[..., AppTest],
                                                     proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "expired tab")
    tab = app("ann")
    now = int(time.time())
    tab.session_state["session_cookie"] = signer(ui_settings()).issue(
        "ann", now=now - 100, ttl_s=50)  # as the tab's cookie is once its time ran out
    button(tab, "Approve").click().run()
    assert proxy.admin().interaction(item_id)["revision"] == 0
    assert any("Your sign-in has ended" in w.value for w in tab.warning)
    assert "reviewer" not in tab.session_state


def test_failed_sign_ins_lock_the_name_with_growing_waits() -> None:
    limits = SignInLimiter(free_failures=3, base_lock_s=30, max_lock_s=200)
    assert [limits.failed("Sam", 100.0) for _ in range(2)] == [0.0, 0.0]
    assert limits.wait_s(" sam ", 100.0) == 0  # case and spaces fold: one name
    assert limits.failed("sam", 100.0) == 30  # the third failure locks it
    assert limits.wait_s("SAM", 110.0) == 20
    assert limits.wait_s("ann", 110.0) == 0  # other names are not locked by it
    assert limits.failed("sam", 131.0) == 60  # doubling...
    assert limits.failed("sam", 200.0) == 120
    assert limits.failed("sam", 400.0) == 200  # ...up to the cap
    limits.succeeded("Sam")
    assert limits.wait_s("sam", 400.0) == 0


def test_guessing_many_names_locks_every_sign_in() -> None:
    limits = SignInLimiter(global_burst=10, global_per_s=0.5)
    for n in range(10):
        limits.failed(f"name{n}", 0.0)
    assert limits.wait_s("ann", 0.0) == 2.0  # one attempt back after 2 s
    assert limits.wait_s("ann", 2.0) == 0


def test_failed_sign_ins_are_logged_without_the_password(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tuneloop.ui.signin"):
        SignInLimiter().failed("mallory", 0.0)
    assert "failed sign-in for reviewer name 'mallory'" in caplog.text


def test_parallel_sessions_share_the_sign_in_limit(app: Callable[..., AppTest],
                                                   proxy: ProxyServer) -> None:
    sessions = [AppTest.from_file(APP, default_timeout=30).run() for _ in range(5)]
    for at in sessions:  # five guesses from five sessions at once
        at.text_input[0].input("ann")
        at.text_input[1].input("guess")
        at.button[0].click()
    threads = [threading.Thread(target=at.run) for at in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(e.value.startswith("Wrong password.") for at in sessions for e in at.error)
    at = app("ann")  # the right password, but the name is locked now: not even checked
    assert any(e.value.startswith("Too many failed sign-ins: try again in") for e in at.error)
    assert "reviewer" not in at.session_state
    assert app("bob").session_state["reviewer"] == "bob"  # another name still signs in


def test_a_signed_out_deep_link_lands_on_its_item(app: Callable[..., AppTest],
                                                  proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "linked item")
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params["id"] = item_id
    at.switch_page("views/item.py").run()
    assert not at.exception
    assert [t.label for t in at.text_input] == ["Your name (recorded with every review)",
                                                "Password"]
    at.text_input[0].input("ann")
    at.text_input[1].input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Item"]
    assert at.text_input[0].value == item_id
    assert "echo: linked item" in next(t for t in at.text_area if t.label == "Answer").value


def test_undo_in_the_queue_brings_the_item_back(app: Callable[..., AppTest],
                                                proxy: ProxyServer) -> None:
    older, newer = logged(proxy, "first question", "second question")
    at = app("ann")
    button(at, "Needs work").click().run()  # newer: needs work; older is shown now
    assert "echo: first question" in next(t for t in at.text_area if t.label == "Answer").value
    button(at, "Undo: needs work").click().run()
    assert not at.exception
    item = proxy.admin().interaction(newer)
    assert (item["review"], item["claimed_by"]) == ("pending", "ann")
    assert proxy.admin().interaction(older)["claimed_by"] is None
    assert "echo: second question" in next(t for t in at.text_area if t.label == "Answer").value


def test_the_next_items_editor_defaults_to_its_answer(app: Callable[..., AppTest],
                                                      proxy: ProxyServer) -> None:
    """A browser that gets the editor again without the value the session state gave it (a
    run cut short by a second Ctrl+Enter) shows the widget's default: that must be the item's
    answer, never an empty editor whose typing would replace the whole answer."""
    logged(proxy, "first question", "second question")
    at = app("ann")
    button(at, "Approve").click().run()
    editor = next(t for t in at.text_area if t.label == "Answer")
    assert editor.proto.default == "echo: first question"
    assert editor.value == "echo: first question"


def test_an_edit_is_only_sent_for_the_item_its_editor_showed(app: Callable[..., AppTest],
                                                             proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "guarded")
    at = app("ann")
    editor = next(t for t in at.text_area if t.label == "Answer")
    at.session_state["editing"] = {}  # as if this editor was drawn for another item
    editor.input(" +t1")
    button(at, "Save edit and approve").click().run()
    assert proxy.admin().interaction(item_id)["revision"] == 0
    assert "The editor was not showing this item; reload." in [e.value for e in at.error]

