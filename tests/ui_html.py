"""What the review app shows inside its `st.html` blocks, as text, for AppTest assertions."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

SHOWN_CLASSES = frozenset({"tl-body", "tl-v", "tl-ok", "tl-bad", "tl-tag", "tl-id",
                           "tl-diff"})


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[int | None] = []  # index into found of an open shown element
        self.found: list[str] = []
        self.void = {"br", "hr", "img", "input", "meta", "link", "wbr"}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.void:
            return
        classes = set((dict(attrs).get("class") or "").split())
        if classes & SHOWN_CLASSES and not any(i is not None for i in self.stack):
            self.found.append("")
            self.stack.append(len(self.found) - 1)
        else:
            self.stack.append(None)

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.void and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        open_ = [i for i in self.stack if i is not None]
        if open_:
            self.found[open_[0]] += data


def shown_texts(html_body: str) -> list[str]:
    """The text of each message body and header value in an HTML block."""
    collector = _Collector()
    collector.feed(html_body)
    collector.close()
    return [text.strip() for text in collector.found]


def page_texts(at: Any) -> list[str]:
    """st.text elements, the shown parts of st.html blocks, and the answer editor."""
    found = [t.value for t in at.text]
    for block in at.html:
        found.extend(shown_texts(block.value))
    found.extend(t.value for t in at.text_area if t.label == "Answer")
    return found
