"""Model text as sanitized HTML: Markdown rendered by markdown-it-py with raw HTML off, then
cleaned by nh3 (the Ammonia sanitizer) against an allow-list.

Everything a client or a model wrote is hostile. The output of this module holds no script, no
event-handler attribute, no style, no image or frame that loads anything, and only links to
http, https or mailto. Each text block carries `dir="auto"` so right-to-left text (Arabic,
Hebrew) reads right-to-left; code stays left-to-right and monospace, like tables.
"""

from __future__ import annotations

import html
import json
import re
from functools import lru_cache
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

MAX_MARKDOWN_CHARS = 200_000  # past this, text is shown raw: rendering would stall the page
SAFE_SCHEMES = ("http://", "https://", "mailto:")
BLOCKS_WITH_DIRECTION = ("p", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "td",
                         "th", "dd", "dt")
ALLOWED_TAGS = frozenset({
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "ins",
    "code", "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th",
    "td", "span", "div", "dl", "dt", "dd", "sub", "sup", "kbd",
})
# the content of these goes too, not only the tag
DROPPED_WITH_CONTENT = frozenset({"script", "style", "iframe", "object", "embed", "noscript",
                                  "template", "svg", "math", "textarea", "select"})
_CONTROL = re.compile(r"[\x00-\x20\x7f]+")


def safe_href(value: str) -> str | None:
    """The link target when it is http, https or mailto; None for anything else (javascript:,
    data:, vbscript:, relative paths, and schemes hidden behind whitespace or control chars)."""
    compact = _CONTROL.sub("", value).lower()
    return value.strip() if compact.startswith(SAFE_SCHEMES) else None


def _attribute_filter(tag: str, attribute: str, value: str) -> str | None:
    if tag == "a" and attribute == "href":
        return safe_href(value)
    return value


@lru_cache(maxsize=1)
def _cleaner() -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes={"a": {"href", "title"}, "th": {"align"}, "td": {"align"},
                    "ol": {"start"}},
        attribute_filter=_attribute_filter,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
        allowed_classes={"span": {"tl-image"}, "div": {"tl-diff", "tl-plain"}},
        tag_attribute_values={"div": {"dir": {"auto", "ltr", "rtl"}}},
        set_tag_attribute_values={
            **{tag: {"dir": "auto"} for tag in BLOCKS_WITH_DIRECTION},
            "pre": {"dir": "ltr"}, "a": {"target": "_blank"},
        },
    )


def sanitize(fragment: str) -> str:
    """An HTML fragment reduced to the allow-list above."""
    return _cleaner().clean(fragment)


def _image_as_text(self: RendererHTML, tokens: list[Token], idx: int, options: OptionsDict,
                   env: EnvType) -> str:
    """A Markdown image is not loaded (it could track the reviewer): its alt text and address
    are shown as text instead."""
    token = tokens[idx]
    alt = "".join(child.content for child in token.children or [])
    src = str(token.attrGet("src") or "")
    return f'<span class="tl-image">[image: {html.escape(alt)}] {html.escape(src)}</span>'


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    parser = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    parser.enable(["table", "strikethrough"])
    parser.add_render_rule("image", _image_as_text)
    return parser


@lru_cache(maxsize=512)  # reruns draw the same messages again: render each text once
def markdown_html(text: str) -> str:
    """Markdown text as a sanitized HTML fragment (raw HTML in the text is shown escaped)."""
    if len(text) > MAX_MARKDOWN_CHARS:
        return plain_html(text)
    return sanitize(_markdown().render(text))


def plain_html(text: str) -> str:
    """Text exactly as written, wrapping at spaces only, never inside a word."""
    return f'<div class="tl-plain" dir="auto">{html.escape(text)}</div>'


def json_html(value: Any) -> str:
    """A JSON value (or a string holding JSON) pretty-printed in a monospace block."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return f'<pre class="tl-code" dir="ltr">{html.escape(value, quote=False)}</pre>'
    pretty = json.dumps(value, indent=2, ensure_ascii=False)
    return f'<pre class="tl-code tl-json" dir="ltr">{html.escape(pretty, quote=False)}</pre>'
