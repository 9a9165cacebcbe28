"""Model text drawn as sanitized Markdown, and the word diff of an edited answer: pure
functions, checked on the HTML they produce."""

from __future__ import annotations

import pytest

from curation_ui.chat_view import conversation_html
from curation_ui.render import markdown_html, safe_href, sanitize
from curation_ui.word_diff import word_diff, word_diff_html
from tests.ui_html import shown_texts


def test_script_tags_are_escaped_text_never_elements() -> None:
    out = markdown_html("hi <script>alert(1)</script> <SCRIPT src=//x></SCRIPT>")
    assert "<script" not in out.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert sanitize("<p>a<script>alert(1)</script>b</p>") == '<p dir="auto">ab</p>'


@pytest.mark.parametrize("href", [
    "javascript:alert(1)", "JaVaScRiPt:alert(1)", " javascript:alert(1)",
    "java\tscript:alert(1)", "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)", "/relative/path", "//evil.example/x",
    "jav&#x61;script:alert(1)", "&#106;avascript:alert(1)", "jav&#x09;ascript:alert(1)",
])
def test_links_that_could_run_script_lose_their_target(href: str) -> None:
    assert safe_href(href) is None
    out = sanitize(f'<a href="{href}">x</a>')
    assert "href" not in out and ">x</a>" in out
    md = markdown_html(f"[x](<{href}>)")
    assert 'href="' not in md


def test_safe_links_are_kept_and_open_apart() -> None:
    out = markdown_html("[docs](https://example.com/a?b=1) and [mail](mailto:a@example.com)")
    assert 'href="https://example.com/a?b=1"' in out and 'href="mailto:a@example.com"' in out
    assert 'rel="noopener noreferrer nofollow"' in out and 'target="_blank"' in out


def test_event_handler_and_style_attributes_are_dropped() -> None:
    out = sanitize('<p onclick="alert(1)" style="position:fixed" onmouseover=x>t</p>'
                   '<a href="https://a.example" onfocus="alert(2)">l</a>')
    assert "onclick" not in out and "onmouseover" not in out and "onfocus" not in out
    assert "style" not in out and ">t</p>" in out
    raw = markdown_html('<img src=x onerror="alert(1)"> <div onclick=y>z</div>')
    assert "<img" not in raw and "<div" not in raw and "&lt;img" in raw


def test_images_are_not_loaded() -> None:
    out = markdown_html("![pixel](https://tracker.example/p.gif)")
    assert "<img" not in out and "[image: pixel] https://tracker.example/p.gif" in out


def test_html_inside_a_code_block_stays_text() -> None:
    out = markdown_html("```html\n<b onclick=x>bold</b>\n<script>alert(1)</script>\n```\n"
                        "and `<i>inline</i>`")
    assert "&lt;b onclick=x&gt;bold&lt;/b&gt;" in out and "<b" not in out
    assert "&lt;script&gt;" in out and "<code>&lt;i&gt;inline&lt;/i&gt;</code>" in out
    assert '<pre dir="ltr">' in out


def test_every_text_block_and_message_says_dir_auto() -> None:
    out = markdown_html("مرحبا **بالعالم**\n\n- أ\n- ب\n\n# עברית\n\n> ציטוט")
    assert '<p dir="auto">مرحبا' in out and '<li dir="auto">' in out
    assert '<h1 dir="auto">' in out and '<blockquote dir="auto">' in out
    chat = conversation_html([{"role": "assistant", "content": "مرحبا"}])
    assert '<section class="tl-msg tl-assistant" dir="auto"' in chat


def test_tables_are_rendered_as_tables_in_the_monospace_block_class() -> None:
    out = markdown_html("| a | b |\n|---|--:|\n| 1 | <b>2</b> |")
    assert "<table>" in out and '<td dir="auto">1</td>' in out and "&lt;b&gt;2" in out
    chat = conversation_html([{"role": "assistant", "content": "| a |\n|---|\n| 1 |"}])
    assert 'class="tl-body"><table>' in chat  # .tl-body table is monospace (styles.py)


def test_tool_results_and_calls_are_pretty_json() -> None:
    chat = conversation_html([
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
         "function": {"name": "find", "arguments": '{"q": "<x>", "n": 2}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"hits": [1, 2], "ok": true}'},
    ])
    assert '{\n  "q": "&lt;x&gt;",\n  "n": 2\n}' in chat
    assert '{\n  "hits": [\n    1,\n    2\n  ],\n  "ok": true\n}' in chat
    assert chat.count('class="tl-code tl-json"') == 2


def test_long_text_is_shown_once_and_folded_in_place() -> None:
    long = " ".join(["word"] * 2000)
    chat = conversation_html([{"role": "user", "content": long}])
    assert chat.count("word word") == long.count("word word") // 1  # one copy, not two
    assert len(shown_texts(chat)) == 1 and shown_texts(chat)[0] == long
    assert 'class="tl-long"' in chat and "Show all 9,999 characters" in chat


def test_raw_mode_shows_the_text_exactly() -> None:
    text = "**not bold** <b>tag</b>"
    chat = conversation_html([{"role": "user", "content": text}], raw=True)
    assert shown_texts(chat) == [text] and "<strong>" not in chat and "<b>" not in chat


def test_the_answer_is_left_to_the_editor() -> None:
    messages = [{"role": "user", "content": "question"}, {"role": "assistant",
                                                         "content": "the answer"}]
    assert "the answer" in conversation_html(messages)
    hidden = conversation_html(messages, answer_in_editor=True)
    assert "the answer" not in hidden and "question" in hidden


def test_word_diff_marks_whole_words() -> None:
    old, new = "The capital is Lyon.", "The capital of France is Paris."
    runs = word_diff(old, new)
    assert "".join(t for k, t in runs if k != "ins") == old
    assert "".join(t for k, t in runs if k != "del") == new
    assert ("del", "Lyon") in runs and ("ins", "Paris") in runs
    assert ("ins", "of France ") in runs


def test_word_diff_html_is_escaped_and_sanitized() -> None:
    out = word_diff_html("say <b>hi</b>", "say <script>alert(1)</script> مرحبا")
    assert "<script" not in out and "<b>" not in out
    assert "say &lt;<del>b</del><ins>script</ins>&gt;<del>hi</del><ins>alert(1)</ins>" in out
    assert "<ins> مرحبا</ins>" in out
    assert out.startswith('<div class="tl-diff" dir="auto">')


def test_word_diff_of_equal_texts_has_no_marks() -> None:
    assert word_diff_html("same words", "same words") == (
        '<div class="tl-diff" dir="auto">same words</div>')


def test_earlier_turns_and_the_system_prompt_fold_to_one_line_under_review() -> None:
    messages = [{"role": "system", "content": "be <b>brief</b>"},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello! How can I help?"},
                {"role": "user", "content": "My order   is\nlate"},
                {"role": "assistant", "content": "the answer"}]
    shown = conversation_html(messages, answer_in_editor=True)
    assert shown.count('<details class="tl-fold">') == 3  # system, Hi, Hello
    assert "<summary>" in shown and "be &lt;b&gt;brief&lt;/b&gt;" in shown
    last_user = shown.split("Chat message from user")[-1]
    assert "tl-fold" not in last_user.split("</section>")[0]  # the question is open
    assert "the answer" not in shown
    assert "tl-fold" not in conversation_html(messages)  # the full view folds nothing
