"""The dataset admin API on a real proxy with a real DuckDB: the examples a filter selects
(streamed), snapshots recorded with their lineage, versions, trace, names that can't become
paths."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from exporter.datasets import build_dataset, effective_filter, parse_filters, snapshot_dir
from exporter.formats import FormatOptions
from exporter.pipeline import ExportOptions
from tests.conftest import ADMIN_TOKEN, REVIEWER_TOKEN, ProxyServer, both_stores, one_store
from tests.test_review_api import logged
from tuneloop.errors import BadRequest, DatasetError, NotFound
from tuneloop.names import dataset_name, path_under

pytestmark = both_stores

TOOLS = [{"type": "function", "function": {
    "name": "lookup_order", "description": "Look up an order.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}}}}]


def reviewed(proxy: ProxyServer) -> dict[str, str]:
    """Six interactions: approved, edited, rejected, pending, needs work, and an approved one
    with tools, a session and label tags."""
    ids = logged(proxy, "approve me", "edit me", "reject me", "leave me", "rework me")
    approve, edit, reject, pending, rework = ids
    raw = proxy.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "where is order 7?"}],
        tools=TOOLS, parallel_tool_calls=False,  # type: ignore[arg-type]
        extra_headers={"x-tuneloop-session": "s-1", "x-tuneloop-tags": "label:refund"})
    tools = str(raw.headers["x-tuneloop-id"])
    proxy.row(tools)
    admin = proxy.admin(REVIEWER_TOKEN)
    admin.review(approve, "approve", reviewer="ann", expected_revision=0)
    original = admin.interaction(edit)["original"]
    admin.review(edit, "edit", reviewer="bob", expected_revision=0,
                 messages=[*original[:-1], {"role": "assistant", "content": "Edited answer."}])
    admin.review(reject, "reject", reviewer="ann", expected_revision=0, reason="bad")
    admin.review(rework, "needs_work", reviewer="ann", expected_revision=0)
    admin.review(tools, "approve", reviewer="ann", expected_revision=0)
    return {"approve": approve, "edit": edit, "reject": reject, "pending": pending,
            "rework": rework, "tools": tools}


def test_examples_stream_the_latest_revision_of_approved_items(proxy: ProxyServer) -> None:
    ids = reviewed(proxy)
    examples = {e["interaction_id"]: e for e in
                proxy.admin(REVIEWER_TOKEN).dataset_examples(effective_filter({}))}
    assert set(examples) == {ids["approve"], ids["edit"], ids["tools"]}
    edited = examples[ids["edit"]]
    assert edited["messages"][-1] == {"role": "assistant", "content": "Edited answer."}
    assert edited["original"] == {"role": "assistant", "content": "echo: edit me"}
    assert (edited["revision"], edited["revision_id"]) == (1, f"{ids['edit']}:1")
    plain = examples[ids["approve"]]
    assert plain["original"] is None and plain["messages"][-1]["content"] == "echo: approve me"
    with_tools = examples[ids["tools"]]
    assert with_tools["tools"] == TOOLS and with_tools["parallel_tool_calls"] is False
    assert with_tools["session_id"] == "s-1" and with_tools["label"] == "refund"
    assert with_tools["messages"][-1]["tool_calls"][0]["function"]["name"] == "lookup_order"

    other = {e["interaction_id"] for e in proxy.admin().dataset_examples(
        {"review": "needs_work"})}
    assert other == {ids["rework"]}
    pending = [e for e in proxy.admin().dataset_examples({"review": "pending"})]
    assert [(e["interaction_id"], e["revision"], e["revision_id"]) for e in pending] == [
        (ids["pending"], 0, None)]
    tagged = list(proxy.admin().dataset_examples({"review": "approved", "tag": "label:refund"}))
    assert [e["interaction_id"] for e in tagged] == [ids["tools"]]
    capped = list(proxy.admin().dataset_examples({"review": "approved", "max_examples": 2}))
    assert len(capped) == 2


def test_stream_ends_with_its_count_and_pages_through_everything(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    proxy = proxy_factory(dataset_page_size=3)
    ids = logged(proxy, *[f"question {i}" for i in range(8)])
    proxy.admin().bulk_review("approve", reviewer="ann", ids=ids)
    with proxy.http() as http:
        response = http.get("/admin/datasets/examples",
                            headers={"authorization": f"Bearer {REVIEWER_TOKEN}"})
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in response.content.splitlines()]
    assert lines[-1] == {"end": True, "examples": 8}
    assert [e["interaction_id"] for e in lines[:-1]] == ids[::-1]  # newest first, no repeats
    # text search pages through the term index instead of one stream
    found = [e["interaction_id"] for e in proxy.admin().dataset_examples({"q": "question"})]
    assert found == ids[::-1]
    assert [e["interaction_id"] for e in proxy.admin().dataset_examples(
        {"q": "question", "max_examples": 4})] == ids[::-1][:4]
    assert list(proxy.admin().dataset_examples({"q": "nowhere"})) == []


@one_store
@pytest.mark.parametrize("query, message", [
    ({"reveiw": "approved"}, "unknown filters"),
    ({"review": "maybe"}, "review must be one of"),
    ({"max_examples": "0"}, "max_examples"),
])
def test_a_bad_filter_is_a_400_before_anything_streams(proxy: ProxyServer, query: dict[str, str],
                                                        message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        list(proxy.admin().dataset_examples(query))


@one_store
def test_tokens_are_required(proxy: ProxyServer) -> None:
    with proxy.http() as http:
        assert http.get("/admin/datasets/examples").status_code == 401
        assert http.get("/admin/datasets").status_code == 401
        assert http.post("/admin/datasets", content=b"{}").status_code == 401


def test_build_record_version_and_trace(proxy: ProxyServer, tmp_path: Path) -> None:
    ids = logged(proxy, *[f"how do I reset password {i}?" for i in range(16)])
    reviewer = proxy.admin(REVIEWER_TOKEN)
    reviewer.bulk_review("approve", reviewer="ann", ids=ids)
    options = ExportOptions(name="support", validation_fraction=0.25, workers=1)
    first = build_dataset(reviewer, tmp_path / "v1", options)
    second = build_dataset(reviewer, tmp_path / "v2", options)
    assert first.manifest["snapshot"]["version"] == 1
    assert second.manifest["snapshot"]["version"] == 2
    on_disk = orjson.loads((tmp_path / "v1" / "manifest.json").read_bytes())
    assert on_disk["snapshot"] == first.manifest["snapshot"]
    assert on_disk["filter"] == {"review": "approved"}

    listed = reviewer.datasets()["datasets"]
    assert listed == [{"name": "support", "versions": 2, "latest_version": 2,
                       "updated_at": listed[0]["updated_at"]}]
    versions = reviewer.dataset_versions("support")["versions"]
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[1]["path"] == str((tmp_path / "v1").resolve())
    one = reviewer.dataset("support", 1)
    assert one["report"]["ok"] is True and one["format"] == "chat"
    counts = first.manifest["counts"]
    assert one["counts"] == {"train": counts["train"], "validation": counts["validation"]}
    assert one["created_by"] == "reviewer"

    for split in ("train", "validation"):
        lines = (tmp_path / "v1" / f"{split}.jsonl").read_bytes().splitlines()
        assert lines
        for number, line in enumerate(lines, start=1):
            traced = reviewer.trace("support", split, number, version=1)
            item = reviewer.interaction(traced["interaction_id"])
            assert orjson.loads(line)["messages"] == item["current"]
            assert traced["revision"] == item["revision"] == 1
            assert traced["revision_detail"]["reviewer"] == "ann"
            assert traced["dataset"]["version"] == 1
    with pytest.raises(NotFound):
        reviewer.trace("support", "train", 10_000, version=1)
    with pytest.raises(NotFound):
        reviewer.dataset("support", 3)
    items = reviewer.dataset_items("support", 1, split="validation")["items"]
    assert len(items) == counts["validation"]


def test_recording_refuses_unknown_interactions_and_bad_bodies(proxy: ProxyServer) -> None:
    (real,) = logged(proxy, "known")
    client = proxy.admin()
    header = {"name": "x", "format": "chat", "filter": {}, "manifest": {}}

    def item(interaction: str, revision: int | None = None) -> bytes:
        return orjson.dumps({"interaction_id": interaction, "revision_id": None,
                             "revision": revision, "split": "train", "line": 1,
                             "skipped": None}) + b"\n"

    with pytest.raises(BadRequest, match="never logged"):
        client.record_dataset(header, [item("nope")])
    with pytest.raises(BadRequest, match="revisions that don't exist"):
        client.record_dataset(header, [item(real, 3)])
    with pytest.raises(BadRequest, match="once"):
        client.record_dataset(header, [item(real), item(real)])
    with pytest.raises(BadRequest, match="lineage record"):
        client.record_dataset(header, [b'{"interaction_id": "a", "colour": 1}\n'])
    with pytest.raises(BadRequest, match="format"):
        client.record_dataset({**header, "format": "csv"}, [])
    assert client.datasets()["datasets"] == []
    recorded = client.record_dataset(header, [item(real)])
    assert recorded["version"] == 1 and recorded["counts"] == {"train": 1}


BAD_NAMES = ["../../etc", "/etc/passwd", "a\x00b", "", ".hidden", "a/b", "x" * 65, "examples",
             "trace", "..", "-rf"]


@one_store
@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_dataset_names_are_refused(proxy: ProxyServer, name: str, tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match=r"dataset name|reserved"):
        dataset_name(name)
    with pytest.raises(BadRequest):
        snapshot_dir(tmp_path, name)
    header = {"name": name, "format": "chat", "filter": {}, "manifest": {}}
    with pytest.raises(BadRequest, match=r"dataset name|reserved|NUL character"):
        proxy.admin().record_dataset(header, [])
    with pytest.raises((BadRequest, NotFound)):
        proxy.admin().dataset_versions(name)
    with pytest.raises(BadRequest):
        build_dataset(proxy.admin(), tmp_path / "out", ExportOptions(name=name, workers=1))
    assert not (tmp_path / "out").exists()


@one_store
def test_raw_paths_with_escapes_never_reach_a_dataset(proxy: ProxyServer) -> None:
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=proxy.url, headers=headers) as http:
        for path in ("/admin/datasets/..%2F..%2Fetc", "/admin/datasets/%2Fetc%2Fpasswd",
                     "/admin/datasets/a%00b", "/admin/datasets/..%2F..%2Fetc/1"):
            response = http.get(path)
            assert response.status_code in (400, 404), path
            assert set(response.json()) == {"error"}


def test_path_under_refuses_escapes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert path_under(root, "support", "v1") == (root / "support" / "v1").resolve()
    for parts in (("..", "x"), ("/etc",), ("a\x00b",), ("a", "../../.."), ("",), (".",)):
        with pytest.raises(BadRequest):
            path_under(root, *parts)
    (tmp_path / "outside").mkdir()
    root.mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(BadRequest, match="escapes"):
        path_under(root, "link")


def test_filters_parse_strictly() -> None:
    assert parse_filters(["review=approved", "tag=x"]) == {"review": "approved", "tag": "x"}
    assert effective_filter({"tag": "x"}) == {"review": "approved", "tag": "x"}
    with pytest.raises(DatasetError, match="key=value"):
        parse_filters(["reveiw=approved"])
    with pytest.raises(DatasetError, match="twice"):
        parse_filters(["tag=a", "tag=b"])
    with pytest.raises(DatasetError, match="key=value"):
        parse_filters(["tag"])
    options = FormatOptions("chat")
    assert options.format == "chat"
