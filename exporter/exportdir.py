"""The export directory: `train.jsonl`, `validation.jsonl`, `lineage.jsonl`, `manifest.json`.

`lineage.jsonl` has one line per input example, in input order, with the columns of the
`dataset_items` table (interaction_id, revision_id, revision, split, line, skipped), so every
exported line traces back to its interaction and revision, and every skipped example is
accounted for; an exported line's record also names its split group (`group`: lines of one
group are duplicates, one prompt, or one session; evaluation counts groups as its
independent evidence). The manifest holds the sha256 of each file; :func:`load_export` checks them.

Exported files hold users' prompts: they are created 0600 in 0700 folders, whatever the umask.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from exporter.split import VALIDATION
from tuneloop.errors import DatasetError

TRAIN_FILE = "train.jsonl"
VALIDATION_FILE = "validation.jsonl"
LINEAGE_FILE = "lineage.jsonl"
MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
_FLUSH_BYTES = 8 << 20
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path) -> None:
    """Create `path` (and missing parents) owner-only; an existing folder is made 0700 too."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if path.stat().st_mode & 0o777 != PRIVATE_DIR:
        path.chmod(PRIVATE_DIR)


def open_private(path: Path) -> IO[bytes]:
    """A new (or truncated) file for writing, mode 0600 from its creation on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    os.fchmod(fd, PRIVATE_FILE)  # a file that existed keeps its mode through O_CREAT
    return os.fdopen(fd, "wb")


class HashedWriter:
    """Buffered writer that keeps the sha256, byte and line counts of what it wrote."""

    def __init__(self, path: Path):
        self.path = path
        self._file: IO[bytes] = open_private(path)
        self._sha = hashlib.sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self.lines = 0
        self.bytes = 0

    def write(self, data: bytes, lines: int = 1) -> None:
        """Write `data`, which holds `lines` whole lines."""
        self._buffer.append(data)
        self._buffered += len(data)
        self.lines += lines
        if self._buffered >= _FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        self._file.write(data)
        self._sha.update(data)
        self.bytes += len(data)

    def close(self) -> dict[str, Any]:
        self._flush()
        self._file.close()
        return {"lines": self.lines, "bytes": self.bytes, "sha256": self._sha.hexdigest()}


@dataclass(frozen=True, slots=True)
class Lineage:
    """Per input example, in input order: whether it has a line, why not, and the start of
    its lineage record (blobs of newline-joined prefixes, one blob per chunk)."""

    emitted: bytearray
    skipped: Mapping[int, str]  # input index -> reason
    prefixes: Sequence[bytes]
    mismatch_parts: Mapping[int, str] = field(default_factory=dict)  # index -> part differing
    groups: np.ndarray | None = None  # per line: its split group (exporter/split.py)


def _route(
    spool: Path, lengths: np.ndarray, sides: np.ndarray, out: Sequence[HashedWriter]
) -> None:
    """Copy runs of consecutive lines that go to the same file, not line by line."""
    if not lengths.size:
        return
    change = np.flatnonzero(sides[1:] != sides[:-1]) + 1
    starts = np.r_[0, change]
    sizes = np.add.reduceat(lengths, starts).tolist()
    counts = np.diff(np.r_[starts, lengths.size]).tolist()
    with spool.open("rb") as source:
        for size, count, side in zip(sizes, counts, sides[starts].tolist(), strict=True):
            data = source.read(size)
            if len(data) != size:
                raise RuntimeError("the spool is shorter than the lines it should hold")
            out[side].write(data, count)
        if source.read(1):
            raise RuntimeError("the spool holds more than the lines the export emitted")


def _line_numbers(sides: np.ndarray) -> list[int]:
    """1-based line number of each line within its own file."""
    validation = sides == VALIDATION
    return np.where(validation, np.cumsum(validation), np.cumsum(~validation)).tolist()


def _write_lineage(trace: HashedWriter, sides: np.ndarray, lineage: Lineage) -> None:
    names = (b"train", b"validation")
    side_of, number_of = sides.tolist(), _line_numbers(sides)
    group_of = lineage.groups.tolist() if lineage.groups is not None else None
    index = line = 0
    for blob in lineage.prefixes:
        records = []
        for prefix in blob.split(b"\n") if blob else ():
            if lineage.emitted[index]:
                side = side_of[line]
                group = b'"group":%d,' % group_of[line] if group_of is not None else b""
                records.append(
                    b'%s"split":"%s","line":%d,%s"skipped":null}\n'
                    % (prefix, names[side], number_of[line], group)
                )
                line += 1
            else:
                part = lineage.mismatch_parts.get(index)  # template_mismatch:<part differing>
                reason = orjson.dumps(lineage.skipped[index] + (f":{part}" if part else ""))
                records.append(
                    b'%s"split":"skipped","line":null,"skipped":%s}\n' % (prefix, reason)
                )
            index += 1
        trace.write(b"".join(records), len(records))
    if index != len(lineage.emitted):
        raise RuntimeError("lineage records and examples disagree")


def write_split_files(
    directory: Path, spool: Path, lengths: np.ndarray, sides: np.ndarray, lineage: Lineage
) -> dict[str, dict[str, Any]]:
    """Route the spooled lines (input order) to train/validation and write the lineage."""
    private_dir(directory)
    writers = (HashedWriter(directory / TRAIN_FILE), HashedWriter(directory / VALIDATION_FILE))
    trace = HashedWriter(directory / LINEAGE_FILE)
    try:
        _route(spool, lengths, sides, writers)
        _write_lineage(trace, sides, lineage)
    finally:
        files = [w.close() for w in (*writers, trace)]
    return dict(zip((TRAIN_FILE, VALIDATION_FILE, LINEAGE_FILE), files, strict=True))


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    with open_private(path) as handle:
        handle.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class ExportDir:
    path: Path
    manifest: dict[str, Any]

    @property
    def train(self) -> Path:
        return self.path / TRAIN_FILE

    @property
    def validation(self) -> Path | None:
        """The validation file, or None when it is empty (OpenAI refuses empty files)."""
        info = self.manifest["files"].get(VALIDATION_FILE, {})
        return self.path / VALIDATION_FILE if info.get("lines") else None

    @property
    def format(self) -> str:
        return str(self.manifest["format"])

    def validation_lineage(self) -> dict[int, dict[str, Any]]:
        """Validation line (1-based) → its lineage record (the interaction it was exported
        from, its revision, whether a reviewer edited the answer)."""
        path = self.path / LINEAGE_FILE
        if not path.exists():
            return {}
        records: dict[int, dict[str, Any]] = {}
        with path.open("rb") as lines:
            for line in lines:
                record = orjson.loads(line)
                if record.get("split") == "validation" and isinstance(record.get("line"), int):
                    records[record["line"]] = record
        return records


def load_export(path: Path, *, verify: bool = True) -> ExportDir:
    """Read an export directory's manifest and check every file against its sha256."""
    manifest_path = path / MANIFEST_FILE
    try:
        manifest = orjson.loads(manifest_path.read_bytes())
    except FileNotFoundError:
        raise DatasetError(f"{path} is not an export directory: no {MANIFEST_FILE}") from None
    except orjson.JSONDecodeError as exc:
        raise DatasetError(f"{manifest_path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        raise DatasetError(f"{manifest_path} is not a tuneloop manifest (version 1)")
    if verify:
        for name, info in manifest["files"].items():
            file = path / name
            if not file.is_file():
                raise DatasetError(f"{file} is missing from the export")
            if sha256_file(file) != info["sha256"]:
                raise DatasetError(f"{file} changed since export (sha256 differs from manifest)")
    return ExportDir(path, manifest)
