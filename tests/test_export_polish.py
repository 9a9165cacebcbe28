"""`tuneloop export` polish from the trial (issue 14): the legacy format's default model, chat
exports without legacy completions, and a bad example's error saying how to fix it or to pass
--skip-invalid, a classification split stratified by label. Real proxy, fake upstream, the
CLI's main function."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest

from exporter.examples import Example
from exporter.fix_hints import how_to_fix
from exporter.formats import FormatOptions
from exporter.pipeline import DatasetRejected, ExportOptions, export
from tests.conftest import ProxyServer
from tests.test_export_cli import SEPARATOR, completions, flat, read_export, review_all, run_cli
from tests.test_review_api import logged


def test_legacy_export_without_base_model_checks_for_a_legacy_model(
        proxy: ProxyServer, tmp_path: Path) -> None:
    ids = completions(proxy, *[f"Summarize ticket {i}" for i in range(11)])
    review_all(proxy, ids)
    out = tmp_path / "legacy"
    result = run_cli(proxy, tmp_path, "export", "--name", "tickets", "--format", "legacy",
                     "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "Dataset check: legacy for davinci-002" in result.stdout
    assert "format_model_mismatch" not in result.output
    assert json.loads((out / "manifest.json").read_text())["base_model"] == "davinci-002"


def test_chat_export_leaves_legacy_completions_out_unless_asked(
        proxy: ProxyServer, tmp_path: Path) -> None:
    chats = logged(proxy, *[f"How do I reset my password, case {i}?" for i in range(11)])
    legacy = completions(proxy, *[f"raw prompt {i}" for i in range(3)])
    review_all(proxy, chats + legacy)

    out = tmp_path / "chat"
    result = run_cli(proxy, tmp_path, "export", "--name", "support", "--out", str(out))
    assert result.exit_code == 0, result.output
    files, lineage = read_export(out)
    exported = {r["interaction_id"] for r in lineage if r["split"] != "skipped"}
    assert exported == set(chats)
    assert {r["interaction_id"]: r["skipped"] for r in lineage if r["split"] == "skipped"} \
        == dict.fromkeys(legacy, "legacy_completion")
    report = flat(result.stdout)
    assert "legacy_skipped (3)" in report and "--include-legacy" in report
    assert json.loads((out / "manifest.json").read_text())["include_legacy"] is False

    both = tmp_path / "both"
    result = run_cli(proxy, tmp_path, "export", "--name", "support", "--include-legacy",
                     "--out", str(both))
    assert result.exit_code == 0, result.output
    files, lineage = read_export(both)
    assert {r["interaction_id"] for r in lineage} == set(chats + legacy)
    assert sum(len(rows) for rows in files.values()) == 14


def test_a_bad_example_says_how_to_fix_it_or_to_skip_it(proxy: ProxyServer,
                                                        tmp_path: Path) -> None:
    ids = completions(proxy, *[f"plain prompt {i}" for i in range(11)],
                      f"a prompt with{SEPARATOR}inside it")
    review_all(proxy, ids)
    bad = ids[-1]
    out = tmp_path / "bad"
    result = run_cli(proxy, tmp_path, "export", "--name", "tickets", "--format", "legacy",
                     "--base-model", "davinci-002", "--out", str(out))
    assert result.exit_code == 2
    said = flat(result.output)
    assert f"separator_in_prompt ({bad}): " in said  # the rule and the example ...
    assert "edit the prompt in the review app, or choose another --separator" in said  # what to do
    assert "--skip-invalid" in said and not out.exists()

    result = run_cli(proxy, tmp_path, "export", "--name", "tickets", "--format", "legacy",
                     "--base-model", "davinci-002", "--skip-invalid", "--out", str(out))
    assert result.exit_code == 0, result.output
    report = flat(result.stdout)
    assert "12 examples:" in report and "validation, 1 skipped" in report
    assert "invalid_skipped (1): left out by --skip-invalid: separator_in_prompt" in report
    assert bad in report
    files, lineage = read_export(out)
    assert sum(len(rows) for rows in files.values()) == 11
    assert [r["skipped"] for r in lineage if r["interaction_id"] == bad] \
        == ["invalid:separator_in_prompt"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["skipped"] == {"invalid:separator_in_prompt": 1}
    assert proxy.admin().dataset("tickets", 1)["counts"]["skipped"] == 1


def test_classification_label_conflicts_are_skipped_and_listed(proxy: ProxyServer,
                                                               tmp_path: Path) -> None:
    good = completions(proxy, *[f"Great service, order {i}" for i in range(6)],
                       tags="label:positive")
    bad = completions(proxy, *[f"Awful delay, order {i}" for i in range(6)],
                      tags="label:negative")
    torn = completions(proxy, "Fine, I guess", tags="label:positive,label:negative")
    review_all(proxy, good + bad + torn)
    args = ["export", "--name", "sentiment", "--format", "classification", "--labels",
            "positive,negative", "--positive-class", "positive", "--out"]
    result = run_cli(proxy, tmp_path, *args, str(tmp_path / "stops"))
    assert result.exit_code == 2
    said = flat(result.output)
    assert f"conflicting_labels ({torn[0]} (negative, positive)): it has several label " \
        "tags: remove all but one" in said
    assert "--skip-invalid" in said

    out = tmp_path / "skips"
    result = run_cli(proxy, tmp_path, *args, str(out), "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert "Dataset check: classification for babbage-002" in result.stdout
    report = flat(result.stdout)
    assert "invalid_skipped (1): left out by --skip-invalid: conflicting_labels" in report
    assert torn[0] in report
    _files, lineage = read_export(out)
    assert {r["interaction_id"] for r in lineage} == set(good + bad)


def test_the_classification_split_is_stratified_and_keeps_sessions_whole(
        tmp_path: Path) -> None:
    examples = [Example(f"ix-{i:03d}", [{"role": "user", "content": f"Is message {i} spam?"},
                                        {"role": "assistant", "content": label}],
                        session_id=f"s-{i // 2}" if i < 20 else None)
                for i, label in enumerate(["yes"] * 45 + ["no"] * 15)]
    for seed in range(3):
        out = tmp_path / f"cls-{seed}"
        export(examples, out, ExportOptions(
            name="spam", format=FormatOptions("classification", positive_class="yes"),
            base_model="babbage-002", validation_fraction=0.2, seed=seed, workers=1))
        files, lineage = read_export(out)
        labels = Counter(row["completion"].strip() for row in files["validation"])
        assert labels == {"yes": 9, "no": 3}, (seed, labels)
        sides = {r["interaction_id"]: r["split"] for r in lineage}
        for pair in range(10):  # a conversation never straddles train and validation
            assert sides[f"ix-{2 * pair:03d}"] == sides[f"ix-{2 * pair + 1:03d}"]


def test_skip_invalid_leaves_out_rows_the_chat_checks_refuse(tmp_path: Path) -> None:
    good = [Example(f"ix-{i:03d}", [{"role": "user", "content": f"question {i}"},
                                    {"role": "assistant", "content": f"answer {i}"}])
            for i in range(12)]
    bad = Example("ix-bad", [{"role": "user", "content": "question"},
                             {"role": "wizard", "content": "answer"}])
    options = ExportOptions(name="chat", validation_fraction=0.0, workers=1)
    with pytest.raises(DatasetRejected) as rejected:
        export([*good, bad], tmp_path / "stops", options)
    hint = how_to_fix(rejected.value.problems)
    assert "unrecognized_role (ix-bad)" in hint and "--skip-invalid" in hint

    result = export([*good, bad], tmp_path / "skips",
                    dataclasses.replace(options, skip_invalid=True))
    assert result.report.counts["train"] == 12
    assert result.report.counts["skipped"] == {"invalid:example_missing_assistant_message": 1}
    [finding] = [f for f in result.report.findings if f.code == "invalid_skipped"]
    assert finding.examples == ("ix-bad",) and "example_missing_assistant_message" in \
        finding.message
