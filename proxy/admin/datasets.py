"""Datasets: the examples a filter selects (streamed), and the snapshots exports record.

- `GET /admin/datasets/examples?<filter>`: newline-delimited JSON, one example a line, paged
  in DuckDB, then `{"end": true, "examples": N}` (a stream without it was cut). Filters are
  the review list's plus `label_prefix`, `label_field`, `max_examples`; `review` defaults to
  `approved`, and evaluation traffic is left out unless `traffic` asks for it.
- `POST /admin/datasets`: NDJSON body, first a header line `{"name", "format", "filter",
  "manifest", "path", "reviewer"?}`, then the export's lineage lines; records the next version,
  `created_by` the header's reviewer (else the client's `x-tuneloop-actor`, else the role).
- `GET /admin/datasets`, `/admin/datasets/{name}`, `/admin/datasets/{name}/{version}`,
  `/admin/datasets/{name}/{version}/items`, `/admin/datasets/trace?name=&version=&split=&line=`.

Reviewer or admin token: building a dataset is curation; starting a fine-tune is not (jobs).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from proxy.admin.common import (
    authorize,
    int_param,
    json_response,
    nul_refused,
    one_value,
    parse_admin_json,
    text_param,
)
from proxy.admin.review_params import FILTER_KEYS, review_query, reviewer_name
from proxy.auth import Role
from storage.dataset_examples import (
    DEFAULT_LABEL_PREFIX,
    ExampleSelection,
    ExampleStream,
    encode_examples,
    example_page,
    without_evaluation_traffic,
)
from storage.datasets import (
    DATASET_ITEMS_SCHEMA,
    SPLITS,
    create_dataset,
    dataset_items,
    dataset_names,
    get_dataset,
    list_datasets,
    trace,
)
from storage.db import Connection
from storage.store import Store
from tuneloop.errors import BadRequest, PayloadTooLarge, TuneloopError
from tuneloop.names import dataset_name

SELECTION_KEYS = (*FILTER_KEYS, "label_prefix", "label_field", "max_examples")
FORMATS = ("chat", "legacy", "preference", "classification")
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024 * 1024
MAX_PATH = 4096
NDJSON = "application/x-ndjson"


def example_selection(params: QueryParams) -> ExampleSelection:
    unknown = set(params.keys()) - set(SELECTION_KEYS)
    if unknown:  # a typo must not widen a dataset to everything
        raise BadRequest(f"unknown filters {sorted(unknown)}; allowed: "
                         f"{', '.join(SELECTION_KEYS)}", param="filter")
    repeated = [k for k in set(params.keys()) if len(params.getlist(k)) > 1]
    if repeated:
        raise BadRequest(f"filters given more than once: {sorted(repeated)}", param="filter")
    values = dict(params)
    values.setdefault("review", "approved")
    query = without_evaluation_traffic(review_query(QueryParams(values)))
    prefix = text_param(params, "label_prefix", 64) or DEFAULT_LABEL_PREFIX
    return ExampleSelection(query, label_prefix=prefix,
                            label_field=text_param(params, "label_field", 128),
                            max_examples=int_param(params, "max_examples", low=1))


def _error_line(exc: Exception) -> bytes:
    error = exc if isinstance(exc, TuneloopError) else TuneloopError(
        f"the example stream failed: {type(exc).__name__}: {exc}")
    return orjson.dumps(error.to_openai(), option=orjson.OPT_APPEND_NEWLINE)


class _Pages:
    """The pages of a selection: one open stream, or (for text search) one query a page.
    `next` runs on a reader thread and returns the page encoded, or None when done."""

    def __init__(self, db: Store, selection: ExampleSelection, page_size: int):
        self.selection, self.page_size = selection, page_size
        self.remaining = selection.max_examples
        self._driver = db.detached_cursor() if selection.query.q is None else None
        self._stream: ExampleStream | None = None
        self._cursor: str | None = None
        self._done = False

    def next(self, con: Connection) -> tuple[bytes, int] | None:
        if self._done or self.remaining == 0:
            return None
        if self._driver is not None:
            if self._stream is None:
                self._stream = ExampleStream(self._driver, self.selection, self.page_size)
            examples = self._stream.next_page(con)
            self._done = examples is None
        else:
            examples, self._cursor = example_page(con, self.selection, cursor=self._cursor,
                                                  size=self.page_size)
            self._done = self._cursor is None
        if self.remaining is not None:
            examples = (examples or [])[:self.remaining]
            self.remaining -= len(examples)
        return (encode_examples(examples), len(examples)) if examples else (b"", 0)

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()


async def stream_examples(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    pages = _Pages(ctx.db, example_selection(request.query_params),
                   ctx.settings.dataset_page_size)
    try:  # the first page before the response starts: a bad query is a plain HTTP error
        first = await ctx.db.read(pages.next)
    except BaseException:
        pages.close()
        raise

    async def body() -> AsyncIterator[bytes]:
        page, sent = first, 0
        try:
            while page is not None:
                data, count = page
                sent += count
                if data:
                    yield data
                page = await ctx.db.read(pages.next)
        except Exception as exc:  # the status line is gone: say it in the stream
            yield _error_line(exc)
            return
        finally:
            pages.close()
        yield orjson.dumps({"end": True, "examples": sent}, option=orjson.OPT_APPEND_NEWLINE)

    return StreamingResponse(body(), media_type=NDJSON)


def _header(line: bytes, max_depth: int) -> dict[str, Any]:
    header = parse_admin_json(line, max_depth, "the first line (the snapshot header)")
    if not isinstance(header, dict):
        raise BadRequest("the first line must be the snapshot header (a JSON object)")
    dataset_name(header.get("name"))
    if header.get("format") not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}", param="format")
    for key in ("filter", "manifest"):
        if not isinstance(header.get(key, {}), dict):
            raise BadRequest(f"{key} must be a JSON object", param=key)
    path = header.get("path")
    if path is not None and (not isinstance(path, str) or len(path) > MAX_PATH
                             or "\x00" in path):
        raise BadRequest(f"path must be a string of at most {MAX_PATH} characters", param="path")
    return header


async def _spool(request: Request, sink: IO[bytes], max_depth: int) -> dict[str, Any]:
    """Header line parsed; the item lines written to `sink` (never all in memory)."""
    head = bytearray()
    header: dict[str, Any] | None = None
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"a snapshot body is at most {MAX_BODY_BYTES} bytes")
        if header is None:
            head += chunk
            end = head.find(b"\n")
            if end < 0:
                if len(head) > MAX_HEADER_BYTES:
                    raise PayloadTooLarge(f"the header line is over {MAX_HEADER_BYTES} bytes")
                continue
            header = _header(bytes(head[:end]), max_depth)
            chunk = bytes(head[end + 1:])
        sink.write(chunk)
    if header is None:
        header = _header(bytes(head), max_depth)
    return header


def _item_batches(source: IO[bytes]) -> Iterator[pa.RecordBatch]:
    source.seek(0, 2)
    if source.tell() == 0:
        return
    source.seek(0)
    # a lineage record as exported: the table's columns, whether a reviewer edited the
    # answer and the line's split group (for evaluation; not stored); any other field is
    # refused
    schema = DATASET_ITEMS_SCHEMA.append(pa.field("edited", pa.bool_())).append(
        pa.field("group", pa.int64()))
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    try:
        for batch in pajson.open_json(source, parse_options=options):
            _refuse_nul(batch)
            yield batch
    except pa.ArrowInvalid as exc:
        raise BadRequest(f"a dataset item line is not a lineage record: {exc}") from exc


def _refuse_nul(batch: pa.RecordBatch) -> None:
    """The item lines' text, as the header's (parse_admin_json): no NUL character."""
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if pa.types.is_string(column.type) and pc.any(
                pc.match_substring(column, "\x00")).as_py():
            raise nul_refused(f"a dataset item line's {name}")


def _actor(request: Request, role: Role, header: dict[str, Any]) -> str:
    """Who records the snapshot: the header's `reviewer` (the person, e.g. the reviewer signed
    in to the app), else the client's actor header, else the token's role."""
    if header.get("reviewer") is not None:
        return reviewer_name(header, request)
    actor = request.headers.get("x-tuneloop-actor", "")
    if actor and len(actor) <= 128 and actor.isprintable():
        return actor
    return role.name.lower()


async def record_snapshot(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    role = ctx.admin.role_of(request.headers)
    with tempfile.TemporaryFile(prefix="tuneloop-dataset-") as spooled:
        header = await _spool(request, spooled, ctx.settings.max_json_depth)
        spooled.flush()
        created_by = _actor(request, role, header)
        created = await ctx.db.write(lambda con: create_dataset(
            con, name=header["name"], format=header["format"],
            items=_item_batches(spooled), filter=header.get("filter") or {},
            manifest=header.get("manifest") or {}, path=header.get("path"),
            created_by=created_by, check_sources=True))
    snapshot = await ctx.db.read(lambda con: get_dataset(con, created["id"]))
    return json_response(_summary(snapshot), 201)


def _summary(dataset: dict[str, Any]) -> dict[str, Any]:
    """A snapshot without its manifest's bulk (the validation report stays one call away)."""
    manifest = dataset.get("manifest") or {}
    out = {k: v for k, v in dataset.items() if k != "manifest"}
    out["manifest"] = {k: manifest[k] for k in ("base_model", "fine_tune_method", "counts",
                                                 "billing", "split", "files", "warnings")
                       if k in manifest}
    return out


async def list_names(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    return json_response({"datasets": await ctx.db.read(dataset_names)})


async def versions(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    name = dataset_name(request.path_params["name"])
    found = await ctx.db.read(lambda con: list_datasets(con, name))
    if not found:
        await ctx.db.read(lambda con: get_dataset(con, name))  # the 404
    return json_response({"name": name, "versions": [_summary(d) for d in found]})


def _version(request: Request) -> tuple[str, int]:
    name = dataset_name(request.path_params["name"])
    raw = request.path_params["version"]
    if not raw.isdigit() or not 0 < int(raw) < 2**31:
        raise BadRequest("version must be a positive integer", param="version")
    return name, int(raw)


async def one_version(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    name, version = _version(request)
    dataset = await ctx.db.read(lambda con: get_dataset(con, name, version))
    dataset["report"] = dataset["manifest"].get("validation")
    return json_response(dataset)


async def items(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    name, version = _version(request)
    params = request.query_params
    split = text_param(params, "split")
    if split is not None and split not in SPLITS:
        raise BadRequest(f"split must be one of {', '.join(SPLITS)}", param="split")
    limit = int_param(params, "limit", default=1000, low=1, high=10_000) or 1000
    offset = int_param(params, "offset", default=0, low=0) or 0

    def run(con: Any) -> list[dict[str, Any]]:
        dataset = get_dataset(con, name, version)
        return dataset_items(con, dataset["id"], split, limit, offset)

    return json_response({"items": await ctx.db.read(run)})


async def trace_line(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    params = request.query_params
    dataset_id = text_param(params, "dataset", 64)
    name = dataset_id or dataset_name(one_value(params, "name"))
    version = int_param(params, "version", low=1)
    split = text_param(params, "split")
    if split not in ("train", "validation"):
        raise BadRequest("split must be train or validation", param="split")
    line = int_param(params, "line", low=1)
    if line is None:
        raise BadRequest("line is the 1-based line number in the split's file", param="line")
    return json_response(await ctx.db.read(lambda con: trace(con, name, version, split, line)))


ROUTES = [
    Route("/admin/datasets", list_names, methods=["GET"]),
    Route("/admin/datasets", record_snapshot, methods=["POST"]),
    Route("/admin/datasets/examples", stream_examples, methods=["GET"]),
    Route("/admin/datasets/trace", trace_line, methods=["GET"]),
    Route("/admin/datasets/{name}", versions, methods=["GET"]),
    Route("/admin/datasets/{name}/{version}", one_version, methods=["GET"]),
    Route("/admin/datasets/{name}/{version}/items", items, methods=["GET"]),
]
