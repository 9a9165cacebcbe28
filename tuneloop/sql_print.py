r"""How `tuneloop sql` prints an answer: plain text only, never markup.

Stored text is whatever apps and models sent: printed through Rich it was read as markup
(`[/bold]` in a prompt crashed the command) and wide cells were cut to `e…`. Here a value is
printed as plain text with control characters made visible (no terminal escapes from stored
text), as an aligned table when it fits the terminal and as one record per block otherwise.

"Control characters" are C0 (and DEL), C1 (U+0080-U+009F: U+009B is a CSI of its own), the bidi
controls (U+200E/F, U+202A-U+202E, U+2066-U+2069, U+061C: they reorder what the terminal
shows) and the line/paragraph separators U+2028/U+2029. In table, vertical and csv output they
print as `\n`, `\t`, `\r`, `\xNN` or `\uNNNN` (csv cells are readable text, not the exact
bytes: use `--format json` for those); json escapes them as JSON `\uNNNN`, so the value a
JSON reader gets is exact.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable, Sequence
from typing import Any, TextIO

_INVISIBLE = [*range(0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F),
              *range(0x2066, 0x206A), 0x2028, 0x2029]
_CONTROL = {i: f"\\x{i:02x}" if i < 0x100 else f"\\u{i:04x}" for i in _INVISIBLE} | {
    0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
_CONTROL_TABLE = str.maketrans(_CONTROL)
# in JSON text these characters only occur inside strings, where \uNNNN is the same value
_JSON_TABLE = str.maketrans({i: f"\\u{i:04x}" for i in _INVISIBLE})


def cell(value: Any) -> str:
    """One value as a single line of plain text."""
    if value is None:
        return "NULL"
    if isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = str(value)
    return text.translate(_CONTROL_TABLE)


def table_lines(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    header = [cell(c) for c in columns]
    body = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        return " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    return [line(header), "-+-".join("-" * w for w in widths), *(line(r) for r in body)]


def vertical_lines(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    names = [cell(c) for c in columns]
    width = max((len(n) for n in names), default=0)
    lines: list[str] = []
    for number, row in enumerate(rows, 1):
        lines.append(f"-[ record {number} ]" + "-" * max(0, width - 8))
        lines.extend(f"{n.ljust(width)} | {cell(v)}" for n, v in zip(names, row, strict=True))
    return lines


def print_answer(result: dict[str, Any], output: str, out: TextIO,
                 note: Callable[[str], None], width: int | None = None) -> None:
    """Print `{"columns", "rows", "truncated"}` as table, vertical, json or csv."""
    columns, rows = result["columns"], result["rows"]
    if output == "json":
        text = json.dumps([dict(zip(columns, row, strict=True)) for row in rows],
                          default=str, ensure_ascii=False)
        out.write(text.translate(_JSON_TABLE) + "\n")
        return
    if output == "csv":
        writer = csv.writer(out)
        writer.writerow([cell(c) for c in columns])
        writer.writerows([cell(v) if v is not None else "" for v in row] for row in rows)
        return
    lines = table_lines(columns, rows) if output == "table" else []
    limit = width or shutil.get_terminal_size((120, 24)).columns
    if output == "vertical" or max((len(line) for line in lines), default=0) > limit:
        lines = vertical_lines(columns, rows)
    out.write("".join(line + "\n" for line in lines))
    if output in ("table", "vertical"):
        note(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    if result.get("truncated"):
        note("(more rows than shown; add a LIMIT or raise --max-rows)")
