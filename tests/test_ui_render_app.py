"""How the review app draws an item and the Browse table, with Streamlit's AppTest against a
real proxy on loopback: one header line, the answer shown once, sanitized HTML only, and the
Browse columns a reviewer scans."""

from __future__ import annotations

import json
from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from tests.conftest import ProxyServer
from tests.test_review_api import logged
from tests.test_ui_app import app  # noqa: F401  (the fixture: the app signed in)
from tests.ui_html import shown_texts


def chat_with_headers(proxy: ProxyServer, text: str, model: str = "gpt-4o-mini") -> str:
    response = proxy.http().post(
        "/v1/chat/completions", json={"model": model,
                                      "messages": [{"role": "user", "content": text}]},
        headers={"authorization": "Bearer sk-test", "x-tuneloop-tags": "billing,vip",
                 "x-tuneloop-user": "carol<b>", "x-tuneloop-session": "sess-42"})
    return response.headers["x-tuneloop-id"]


def html_blocks(at: AppTest) -> list[str]:
    return [h.value for h in at.html if not h.value.startswith("<style>")]


def test_the_header_is_one_line_with_every_fact(app: Callable[..., AppTest],  # noqa: F811
                                                proxy: ProxyServer) -> None:
    item_id = chat_with_headers(proxy, "How do refunds work?")
    proxy.wait_logged(1)
    at = app()
    assert not at.exception
    heads = [h for h in html_blocks(at) if 'class="tl-head"' in h]
    assert len(heads) == 1
    head = heads[0]
    values = shown_texts(head)
    for fact in ("chat.completions", "gpt-4o-mini", "completed · 200", "carol<b>",
                 "sess-42", "billing", "vip", "—", "pending · revision 0", item_id):
        assert fact in values, (fact, values)
    assert "carol&lt;b&gt;" in head and "<b>" not in head  # escaped, never markup
    assert 'class="tl-ok"' in head and 'class="tl-bad"' not in head
    assert f'<span class="tl-id" title="interaction id">{item_id}</span>' in head
    assert [t.label for t in at.toggle] == ["Raw text"]


def test_a_failed_call_is_marked_in_the_header(app: Callable[..., AppTest],  # noqa: F811
                                               proxy: ProxyServer) -> None:
    response = proxy.http().post(
        "/v1/chat/completions", headers={"authorization": "Bearer sk-test"},
        json={"model": "fail-502", "messages": [{"role": "user", "content": "cancel"}]})
    assert response.status_code == 502
    item_id = response.headers["x-tuneloop-id"]
    proxy.wait_logged(1)
    at = app()
    at.session_state["item_id"] = item_id
    at.switch_page("views/item.py").run()
    assert not at.exception
    (head,) = [h for h in html_blocks(at) if 'class="tl-head"' in h]
    assert '<span class="tl-bad">upstream_error · 502</span>' in head


def test_the_answer_is_shown_once_in_the_editor(app: Callable[..., AppTest],  # noqa: F811
                                                proxy: ProxyServer) -> None:
    logged(proxy, "Say **hello** in Arabic")
    at = app()
    drawn = "".join(html_blocks(at))
    assert "<strong>hello</strong>" in drawn  # the prompt as Markdown
    assert "echo: " not in drawn  # the answer is not drawn in the chat...
    answers = [t.value for t in at.text_area if t.label == "Answer"]
    assert answers == ["echo: Say **hello** in Arabic"]  # ...but in the editor, once
    assert not [t.value for t in at.text if "echo:" in t.value]


def test_raw_text_is_one_toggle_away(app: Callable[..., AppTest],  # noqa: F811
                                     proxy: ProxyServer) -> None:
    logged(proxy, "**not bold** <i>x</i>")
    at = app()
    at.toggle[0].set_value(True).run()
    drawn = "".join(html_blocks(at))
    assert "<strong>" not in drawn and "**not bold** &lt;i&gt;x&lt;/i&gt;" in drawn


def test_browse_shows_answer_tags_and_score_in_fifty_compact_rows(
        app: Callable[..., AppTest], proxy: ProxyServer) -> None:  # noqa: F811
    ids = logged(proxy, *(f"question {n}\nwith a second line" for n in range(3)))
    proxy.admin().tag(ids[0], reviewer="ann", add=["urgent"])
    proxy.http().post("/v1/feedback", json={"id": ids[0], "score": 0.5},
                      headers={"authorization": "Bearer sk-test"})
    at = app()
    at.switch_page("views/browse.py").run()
    assert not at.exception
    table = at.dataframe[0]
    frame = table.value
    for column in ("answer", "tags", "score", "prompt", "review", "model"):
        assert column in frame.columns
    assert frame["answer"].iloc[-1] == "echo: question 0 with a second line"  # one line
    assert frame["tags"].iloc[-1] == "urgent"
    config = json.loads(table.proto.columns)
    assert config["id"]["hidden"] is True  # kept for Open, not taking screen width
    widths = sum(int(c.get("width", 0)) for c in config.values() if isinstance(c, dict))
    assert widths <= 1080  # fits beside the sidebar at 1440 px: no horizontal scroll
    assert 0 < table.proto.row_height <= 16  # 50 rows + the header fit 900 px


def test_a_filter_shows_the_items_without_an_answer(app: Callable[..., AppTest],  # noqa: F811
                                                    proxy: ProxyServer) -> None:
    response = proxy.http().post(
        "/v1/chat/completions", headers={"authorization": "Bearer sk-test"},
        json={"model": "fail-502", "messages": [{"role": "user", "content": "cancel"}]})
    failed_id = response.headers["x-tuneloop-id"]
    (answered,) = logged(proxy, "fine")
    at = app()
    (head,) = [h for h in html_blocks(at) if 'class="tl-head"' in h]
    assert answered in shown_texts(head)  # the queue leaves the answerless item out
    box = next(s for s in at.selectbox if s.label == "Untrainable items")
    box.set_value("only these").run()
    assert not at.exception
    (head,) = [h for h in html_blocks(at) if 'class="tl-head"' in h]
    assert failed_id in shown_texts(head) and "upstream_error · 502" in shown_texts(head)


def test_the_edit_shows_as_a_word_diff(app: Callable[..., AppTest],  # noqa: F811
                                       proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "capital of France?")
    at = app()
    next(t for t in at.text_area if t.label == "Answer").input("echo: Paris is the capital")
    next(b for b in at.button if b.label == "Show my changes").click().run()
    assert not at.exception
    (diff,) = [h for h in html_blocks(at) if 'class="tl-diff"' in h]
    assert diff.endswith('echo: <ins>Paris is the </ins>capital<del> of France?</del></div>')
    assert proxy.admin().interaction(item_id)["revision"] == 0  # nothing was saved


def test_an_answer_cut_by_max_tokens_is_marked_in_the_header(
        app: Callable[..., AppTest], proxy: ProxyServer) -> None:  # noqa: F811
    (item_id,) = logged(proxy, "explain the whole billing export in detail", max_tokens=2)
    at = app()
    assert not at.exception
    (head,) = [h for h in html_blocks(at) if 'class="tl-head"' in h]
    assert item_id in shown_texts(head)
    assert '<span class="tl-bad">cut by max_tokens · 200</span>' in head
    (whole,) = logged(proxy, "a short one")
    at.session_state["item_id"] = whole
    at.switch_page("views/item.py").run()
    (head,) = [h for h in html_blocks(at) if 'class="tl-head"' in h]
    assert '<span class="tl-ok">completed · 200</span>' in head


def test_browse_says_which_items_are_untrainable_and_leaves_no_score_blank(
        app: Callable[..., AppTest], proxy: ProxyServer) -> None:  # noqa: F811
    response = proxy.http().post(
        "/v1/chat/completions", headers={"authorization": "Bearer sk-test"},
        json={"model": "fail-502", "messages": [{"role": "user", "content": "cancel"}]})
    failed_id = response.headers["x-tuneloop-id"]
    scored, plain = logged(proxy, "scored", "plain")
    proxy.http().post("/v1/feedback", json={"id": scored, "score": 0.5},
                      headers={"authorization": "Bearer sk-test"})
    proxy.wait_logged(3)
    at = app()
    at.switch_page("views/browse.py").run()
    assert not at.exception
    frame = at.dataframe[0].value.set_index("id")
    assert frame.loc[failed_id, "trainable"] == "✗ upstream error"
    assert frame.loc[plain, "trainable"] == "" and frame.loc[scored, "trainable"] == ""
    assert frame.loc[plain, "score"] == ""  # blank, not "None"
    assert frame.loc[scored, "score"] == "+0.50"
    config = json.loads(at.dataframe[0].proto.columns)
    assert config["trainable"]["label"] == "trainable"
