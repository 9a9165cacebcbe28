"""Documents to synthesize from: a folder, a glob, one file, or a JSONL file of records.

Markdown and plain text are read as they are (a Markdown front-matter block is dropped);
HTML is reduced to text with the standard library's parser: scripts, styles and the head are
dropped, headings become Markdown headings (so chunking can split on them), block elements
become paragraphs. A JSONL file holds one document per line in its `text` field (named by
its `id` or `title` field when it has one, else by its line number).
"""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from tuneloop.errors import ConfigError

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdx"})
TEXT_SUFFIXES = frozenset({".txt", ".text", ".rst"})
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
SUFFIXES = MARKDOWN_SUFFIXES | TEXT_SUFFIXES | HTML_SUFFIXES | JSONL_SUFFIXES
_FRONT_MATTER = re.compile(r"\A---\s*\n.*?\n---\s*\n", re.DOTALL)


@dataclass(frozen=True)
class Document:
    name: str  # shown in reports and turned into the `src:` tag
    text: str


# -- HTML -------------------------------------------------------------------------------------
_DROPPED = frozenset({"script", "style", "noscript", "template", "head", "svg", "iframe",
                      "object", "canvas"})
_BLOCKS = frozenset({"p", "div", "section", "article", "main", "header", "footer", "aside",
                     "nav", "blockquote", "pre", "table", "tr", "ul", "ol", "dl", "dt", "dd",
                     "figure", "figcaption", "form", "fieldset", "details", "summary", "hr",
                     "body", "html"})
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_VOID = frozenset({"br", "hr", "img", "input", "meta", "link", "area", "base", "col",
                   "embed", "source", "track", "wbr"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.current: list[str] = []
        self.dropped_depth = 0
        self.pre_depth = 0
        self.heading: int | None = None

    def _flush(self) -> None:
        text = "".join(self.current)
        if self.pre_depth == 0:
            text = " ".join(text.split())
        text = text.strip("\n")
        if text.strip():
            if self.heading is not None:
                text = "#" * self.heading + " " + " ".join(text.split())
            self.blocks.append(text)
        self.current = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED:
            self.dropped_depth += 1
            return
        if tag in _VOID:
            if tag == "br":
                self.current.append("\n" if self.pre_depth else " ")
            elif tag == "hr":
                self._flush()
            return
        if tag in _HEADINGS:
            self._flush()
            self.heading = _HEADINGS[tag]
        elif tag == "li":
            self._flush()
            self.current.append("- ")
        elif tag in _BLOCKS:
            self._flush()
            if tag == "pre":
                self.pre_depth += 1
        elif tag in ("td", "th"):
            self.current.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROPPED:
            self.dropped_depth = max(0, self.dropped_depth - 1)
            return
        if tag in _HEADINGS:
            self._flush()
            self.heading = None
        elif tag in _BLOCKS or tag == "li":
            self._flush()
            if tag == "pre":
                self.pre_depth = max(0, self.pre_depth - 1)

    def handle_data(self, data: str) -> None:
        if self.dropped_depth == 0:
            self.current.append(data)


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    parser._flush()
    return "\n\n".join(parser.blocks)


# -- files ------------------------------------------------------------------------------------
def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def _jsonl_documents(path: Path, name: str) -> list[Document]:
    documents = []
    for number, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{path}:{number} is not JSON: {exc}") from exc
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise ConfigError(f"{path}:{number} has no string `text` field")
        label = record.get("id") or record.get("title")
        suffix = str(label) if isinstance(label, str | int) and str(label).strip() else number
        documents.append(Document(f"{name}:{suffix}", text.strip()))
    return documents


def read_documents(path: Path, name: str) -> list[Document]:
    """The documents of one file (a JSONL file holds many)."""
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return _jsonl_documents(path, name)
    text = _read(path)
    if suffix in HTML_SUFFIXES:
        text = html_to_text(text)
    elif suffix in MARKDOWN_SUFFIXES:
        text = _FRONT_MATTER.sub("", text, count=1)
    return [Document(name, text.strip())]


def find_files(spec: str) -> list[tuple[Path, str]]:
    """(file, name) for a folder (every supported file below it, named relative to it), a
    file, or a glob pattern; sorted, so runs see documents in the same order."""
    root = Path(spec).expanduser()
    if root.is_dir():
        files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                 and not any(part.startswith(".") for part in p.relative_to(root).parts)]
        return sorted((p, p.relative_to(root).as_posix()) for p in files)
    if root.is_file():
        return [(root, root.name)]
    matches = sorted(Path(m) for m in glob.glob(str(root), recursive=True))
    files = [p for p in matches if p.is_file()]
    if not files:
        raise ConfigError(f"--docs {spec}: no such folder or file, and no file matches it")
    return [(p, p.as_posix()) for p in files]


def load_documents(spec: str) -> list[Document]:
    """Every non-empty document `spec` names."""
    documents = [doc for path, name in find_files(spec) for doc in read_documents(path, name)]
    found = [doc for doc in documents if doc.text]
    if not found:
        raise ConfigError(f"--docs {spec}: no document with any text")
    return found
