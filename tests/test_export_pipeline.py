"""Export directories on real files: every line checked, lineage, manifest, failures."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from exporter.examples import Example
from exporter.exportdir import load_export
from exporter.formats import FormatOptions, RuleViolations, to_chat, to_legacy
from exporter.pipeline import DatasetRejected, ExportOptions, export
from tuneloop.errors import DatasetError

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def example(i: int, **kw: Any) -> Example:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a support bot."},
        {"role": "user", "content": f"Where is order {i}?"},
    ]
    if i % 5 == 0:
        call = {
            "id": f"c{i}",
            "type": "function",
            "function": {"name": "lookup", "arguments": "{}"},
        }
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c{i}", "content": "shipped"},
        ]
    messages.append({"role": "assistant", "content": f"Order {i} has shipped."})
    fields: dict[str, Any] = {
        "tools": TOOLS if i % 5 == 0 else None,
        "revision_id": f"rev-{i}",
        "revision": 2,
        "session_id": f"s{i // 4}",
    }
    return Example(f"ix-{i:04d}", messages, **{**fields, **kw})


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def test_chat_export_traces_every_line(tmp_path: Path) -> None:
    examples = [example(i) for i in range(40)]
    out = tmp_path / "support-v1"
    options = ExportOptions(name="support", filter={"review": "approved"}, seed=3, workers=1)
    result = export(iter(examples), out, options)

    assert sorted(p.name for p in out.iterdir()) == [
        "lineage.jsonl",
        "manifest.json",
        "train.jsonl",
        "validation.jsonl",
    ]
    files = {
        "train": read_jsonl(out / "train.jsonl"),
        "validation": read_jsonl(out / "validation.jsonl"),
    }
    lineage = read_jsonl(out / "lineage.jsonl")
    assert [r["interaction_id"] for r in lineage] == [e.interaction_id for e in examples]
    by_id = {e.interaction_id: e for e in examples}
    for record in lineage:
        source = by_id[record["interaction_id"]]
        assert record["revision_id"] == source.revision_id and record["revision"] == 2
        assert files[record["split"]][record["line"] - 1] == to_chat(source)
    assert len(files["train"]) + len(files["validation"]) == 40
    assert len(files["validation"]) == 4
    sessions = {
        s: {r["split"] for r in lineage if by_id[r["interaction_id"]].session_id == s}
        for s in {e.session_id for e in examples}
    }
    assert all(len(sides) == 1 for sides in sessions.values())

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == result.manifest
    assert manifest["name"] == "support" and manifest["format"] == "chat"
    assert (
        manifest["filter"] == {"review": "approved"}
        and manifest["fine_tune_method"] == "supervised"
    )
    assert manifest["counts"] == {"examples": 40, "train": 36, "validation": 4, "skipped": {}}
    for name in ("train.jsonl", "validation.jsonl", "lineage.jsonl"):
        assert manifest["files"][name]["sha256"] == sha256(out / name)
    assert manifest["validation"]["ok"] is True
    train_tokens = manifest["tokens"]["train"]
    assert train_tokens["examples"] == 36 and train_tokens["total_tokens"] > 36 * 20
    assert manifest["billing"]["default_epochs"] == 3
    assert manifest["billing"]["billed_tokens"] == 3 * train_tokens["billed_tokens_per_epoch"]
    assert "missing_system_message" not in json.dumps(manifest["validation"]["findings"])
    assert load_export(out).validation == out / "validation.jsonl"
    assert leftovers(tmp_path) == []
    assert "36 train, 4 validation" in result.report.render()


def test_the_pool_writes_exactly_what_one_process_writes(tmp_path: Path) -> None:
    examples = [example(i) for i in range(300)]
    one = export(examples, tmp_path / "one", ExportOptions(name="x", workers=1, chunk_size=7))
    two = export(examples, tmp_path / "two", ExportOptions(name="x", workers=2, chunk_size=7))
    for name in ("train.jsonl", "validation.jsonl", "lineage.jsonl"):
        assert one.manifest["files"][name] == two.manifest["files"][name]
    assert one.manifest["tokens"] == two.manifest["tokens"]


def test_legacy_export_follows_the_article(tmp_path: Path) -> None:
    examples = [
        Example(
            f"ix-{i}",
            [
                {"role": "user", "content": f"Question {i}?"},
                {"role": "assistant", "content": f"Answer {i}."},
            ],
        )
        for i in range(20)
    ]
    options = ExportOptions(
        name="qa", format=FormatOptions("legacy"), base_model="davinci-002", validation_fraction=0.2
    )
    result = export(examples, tmp_path / "qa", options)
    rows = read_jsonl(tmp_path / "qa" / "train.jsonl") + read_jsonl(
        tmp_path / "qa" / "validation.jsonl"
    )
    assert sorted(rows, key=str) == sorted((to_legacy(e) for e in examples), key=str)
    for row in rows:
        assert row["prompt"].endswith("\n\n###\n\n") and row["prompt"].count("###") == 1
        assert row["completion"].startswith(" ") and not row["completion"].startswith("  ")
        assert row["completion"].endswith("###") and row["completion"].count("###") == 1
    assert result.manifest["prompt_separator"] == "\n\n###\n\n" and result.manifest["stop"] == "###"
    summary = result.manifest["validation"]["details"]["prepare_data"]
    assert summary["common_prompt_suffix"].endswith("\n\n###\n\n")
    assert summary["task_type"] == "conditional generation"


def test_a_rule_breaker_fails_the_export_and_leaves_nothing(tmp_path: Path) -> None:
    examples = [
        Example(
            f"ix-{i}",
            [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"A{i}"}],
        )
        for i in range(30)
    ]
    examples[7] = examples[7]._replace(
        messages=[
            {"role": "user", "content": "a\n\n###\n\nb"},
            {"role": "assistant", "content": "x"},
        ]
    )
    examples[21] = examples[21]._replace(
        messages=[
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "use ### here"},
        ]
    )
    options = ExportOptions(
        name="qa", format=FormatOptions("legacy"), base_model="davinci-002", chunk_size=4, workers=2
    )
    with pytest.raises(RuleViolations) as caught:
        export(examples, tmp_path / "qa", options)
    assert caught.value.problems == {
        "separator_in_prompt": ["ix-7"],
        "stop_in_completion": ["ix-21"],
    }
    assert "ix-7" in str(caught.value) and "ix-21" in str(caught.value)
    assert not (tmp_path / "qa").exists() and leftovers(tmp_path) == []


def test_validation_errors_reject_the_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetRejected) as caught:
        export([example(i) for i in range(8)], tmp_path / "small", ExportOptions(name="s"))
    assert [f.code for f in caught.value.report.errors] == ["too_few_examples"]

    broken = [example(i) for i in range(20)]
    broken[3] = broken[3]._replace(
        messages=[*broken[3].messages[:-1], {"role": "assistant", "content": ""}]
    )
    broken[9] = broken[9]._replace(messages=broken[9].messages[:2])
    with pytest.raises(DatasetRejected) as caught:
        export(broken, tmp_path / "broken", ExportOptions(name="b"))
    assert caught.value.problems == {
        "missing_content": ["ix-0003"],
        "example_missing_assistant_message": ["ix-0009"],
    }
    assert (
        "ix-0003" in caught.value.message
        and "ERROR missing_content" in caught.value.report.render()
    )

    with pytest.raises(DatasetRejected, match="format_model_mismatch"):
        export(
            [example(i) for i in range(20)],
            tmp_path / "m",
            ExportOptions(name="m", base_model="davinci-002"),
        )
    assert leftovers(tmp_path) == [] and list(tmp_path.iterdir()) == []


def test_preference_export_skips_unedited_answers(tmp_path: Path) -> None:
    examples = [
        example(
            i,
            tools=None,
            original={
                "role": "assistant",
                "content": f"Order {i} shipped." if i % 3 else f"Order {i} has shipped.",
            },
        )
        for i in range(1, 31)
    ]
    result = export(
        examples,
        tmp_path / "dpo",
        ExportOptions(
            name="p", format=FormatOptions("preference"), base_model="gpt-4.1-mini-2025-04-14"
        ),
    )
    assert result.manifest["fine_tune_method"] == "dpo"
    assert result.manifest["counts"]["skipped"] == {"not_edited": 10}
    lineage = read_jsonl(tmp_path / "dpo" / "lineage.jsonl")
    skipped = [r["interaction_id"] for r in lineage if r["split"] == "skipped"]
    assert skipped == [f"ix-{i:04d}" for i in range(3, 31, 3)]
    assert all(
        r["skipped"] == "not_edited" and r["line"] is None
        for r in lineage
        if r["split"] == "skipped"
    )
    rows = read_jsonl(tmp_path / "dpo" / "train.jsonl")
    assert all(r["preferred_output"][0]["content"].endswith("has shipped.") for r in rows)
    assert all(r["non_preferred_output"][0]["content"].endswith(" shipped.") for r in rows)
    assert rows[0]["input"]["messages"][-1]["role"] in ("user", "tool")


def test_classification_export_checks_labels(tmp_path: Path) -> None:
    def labelled(i: int, label: str) -> Example:
        return Example(
            f"ix-{i}",
            [
                {"role": "user", "content": f"Review {i}: fine"},
                {"role": "assistant", "content": label},
            ],
            label=label,
        )

    examples = [labelled(i, ["positive", "negative"][i % 2]) for i in range(24)]
    fmt = FormatOptions("classification", positive_class="positive")
    result = export(
        examples, tmp_path / "c", ExportOptions(name="c", format=fmt, base_model="babbage-002")
    )
    assert result.manifest["classification"] == {
        "n_classes": 2,
        "positive_class": "positive",
        "labels": {"negative": 12, "positive": 12},
    }
    row = read_jsonl(tmp_path / "c" / "train.jsonl")[0]
    assert row["completion"] in (" positive", " negative") and row["prompt"].endswith("\n\n###\n\n")
    with pytest.raises(DatasetRejected, match="positive_class_missing"):
        export(
            examples,
            tmp_path / "d",
            ExportOptions(
                name="d", format=FormatOptions("classification"), base_model="babbage-002"
            ),
        )


def test_examples_over_the_model_limit_are_warned_about(tmp_path: Path) -> None:
    examples = [example(i) for i in range(20)]
    examples[4] = examples[4]._replace(
        messages=[
            {"role": "user", "content": "word " * 5000},
            {"role": "assistant", "content": "ok"},
        ]
    )
    result = export(
        examples, tmp_path / "long", ExportOptions(name="l", base_model="gpt-3.5-turbo-0613")
    )
    over = [f for f in result.report.warnings if f.code == "over_token_limit"]
    assert over and over[0].examples == ("ix-0004",)
    assert any(w.startswith("over_token_limit") for w in result.manifest["warnings"])
    per_epoch = result.manifest["tokens"]["train"]["billed_tokens_per_epoch"]
    assert per_epoch < result.manifest["tokens"]["train"]["total_tokens"]  # truncated at 4,096


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "x"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    examples = [example(i) for i in range(20)]
    with pytest.raises(DatasetError, match="not empty"):
        export(examples, out, ExportOptions(name="x"))
    assert (out / "keep.txt").read_text() == "mine"
    export(examples, out, ExportOptions(name="x", overwrite=True))
    assert not (out / "keep.txt").exists() and (out / "train.jsonl").exists()
    assert leftovers(tmp_path) == []


def test_load_export_detects_a_changed_file(tmp_path: Path) -> None:
    export([example(i) for i in range(20)], tmp_path / "e", ExportOptions(name="e"))
    with (tmp_path / "e" / "train.jsonl").open("a") as f:
        f.write("{}\n")
    with pytest.raises(DatasetError, match="sha256"):
        load_export(tmp_path / "e")
    with pytest.raises(DatasetError, match="not an export directory"):
        load_export(tmp_path)


def test_no_examples_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetRejected, match="too_few_examples") as caught:
        export(iter(()), tmp_path / "empty", ExportOptions(name="e"))
    assert caught.value.report.counts == {"examples": 0, "train": 0, "validation": 0, "skipped": {}}
    assert list(tmp_path.iterdir()) == []


def test_values_that_are_not_json_are_named(tmp_path: Path) -> None:
    examples = [example(i) for i in range(20)]
    bad = {"role": "user", "content": "bad \ud800 surrogate"}
    examples[5] = examples[5]._replace(messages=[bad, {"role": "assistant", "content": "x"}])
    with pytest.raises(RuleViolations, match="not_serializable") as caught:
        export(examples, tmp_path / "bad", ExportOptions(name="b", workers=2, chunk_size=4))
    assert caught.value.problems == {"not_serializable": ["ix-0005"]}
