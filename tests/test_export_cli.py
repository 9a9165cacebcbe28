"""`tuneloop export` against a real proxy: interactions reviewed through the admin API, exported
in each format, the files checked line by line against the reviewed content, every line
traced back to its interaction and revision."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.conftest import ADMIN_TOKEN, REVIEWER_TOKEN, ProxyServer, both_stores
from tests.test_review_api import logged
from tuneloop.cli import main

pytestmark = both_stores

SEPARATOR = "\n\n###\n\n"


def run_cli(proxy: ProxyServer, tmp_path: Path, *args: str,
            token: str = ADMIN_TOKEN, **env: str) -> Result:
    variables = {"TUNELOOP_ADMIN_TOKEN": token if token == ADMIN_TOKEN else None,
                 "TUNELOOP_REVIEWER_TOKEN": token if token != ADMIN_TOKEN else None,
                 "TUNELOOP_API": proxy.url, **env}
    return CliRunner().invoke(main, ["--db", str(tmp_path / "cli.duckdb"), *args],
                              env=variables, catch_exceptions=False)


def flat(text: str) -> str:
    """Output without the line breaks rich puts in long messages."""
    return " ".join(text.split())


def completions(proxy: ProxyServer, *prompts: str, tags: str | None = None) -> list[str]:
    client = proxy.openai()
    ids = []
    for prompt in prompts:
        headers = {"x-tuneloop-tags": tags} if tags else {}
        raw = client.completions.with_raw_response.create(
            model="davinci-002", prompt=prompt, max_tokens=20, extra_headers=headers)
        ids.append(str(raw.headers["x-tuneloop-id"]))
    for interaction_id in ids:
        proxy.row(interaction_id)
    return ids


def review_all(proxy: ProxyServer, ids: list[str], *, edit: Sequence[str] = (),
               reject: Sequence[str] = ()) -> None:
    reviewer = proxy.admin(REVIEWER_TOKEN)
    for interaction_id in ids:
        if interaction_id in edit:
            messages = reviewer.interaction(interaction_id)["original"]
            fixed = [*messages[:-1], {"role": "assistant",
                                      "content": f"Reviewed answer {interaction_id[-6:]}."}]
            reviewer.review(interaction_id, "edit", reviewer="ann", expected_revision=0,
                            messages=fixed)
        elif interaction_id in reject:
            reviewer.review(interaction_id, "reject", reviewer="ann", expected_revision=0,
                            reason="wrong")
        else:
            reviewer.review(interaction_id, "approve", reviewer="ann", expected_revision=0)


def read_export(out: Path) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    files = {split: [json.loads(line) for line in (out / f"{split}.jsonl").read_text()
                     .splitlines()] for split in ("train", "validation")}
    lineage = [json.loads(line) for line in (out / "lineage.jsonl").read_text().splitlines()]
    return files, lineage


def check_lineage(proxy: ProxyServer, name: str, files: dict[str, list[dict[str, Any]]],
                  lineage: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Each line traces (through the admin API) to the interaction the lineage names, at the
    revision it is now; returns the reviewed item of each line."""
    reviewer = proxy.admin(REVIEWER_TOKEN)
    by_line = {(r["split"], r["line"]): r for r in lineage if r["split"] != "skipped"}
    assert len(by_line) == sum(len(rows) for rows in files.values())
    items = {}
    for split, rows in files.items():
        for number in range(1, len(rows) + 1):
            traced = reviewer.trace(name, split, number)
            source = by_line[(split, number)]
            assert traced["interaction_id"] == source["interaction_id"]
            item = reviewer.interaction(traced["interaction_id"])
            assert traced["revision"] == source["revision"] == item["revision"]
            assert traced["revision_id"] == f"{item['id']}:{item['revision']}"
            items[(split, number)] = item
    return items


def test_chat_export_is_the_reviewed_content(proxy: ProxyServer, tmp_path: Path) -> None:
    ids = logged(proxy, *[f"How do I change my address, case {i}?" for i in range(18)])
    edited, rejected, pending = ids[:3], ids[3:5], ids[5:7]
    review_all(proxy, ids[:5] + ids[7:], edit=edited, reject=rejected)
    out = tmp_path / "exports" / "support-v1"
    result = run_cli(proxy, tmp_path, "export", "--name", "support", "--format", "chat",
                     "--validation", "0.2", "--out", str(out), "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "Dataset check: chat for gpt-4o-mini-2024-07-18" in result.stdout
    assert "dataset support version 1" in flat(result.output)
    files, lineage = read_export(out)
    items = check_lineage(proxy, "support", files, lineage)
    assert len(items) == 14 and files["validation"]
    exported = set()
    for (split, number), item in items.items():
        row = files[split][number - 1]
        assert row == {"messages": item["current"]}
        exported.add(item["id"])
        if item["id"] in edited:
            assert row["messages"][-1]["content"].startswith("Reviewed answer")
            assert item["original"][-1]["content"] != row["messages"][-1]["content"]
    assert exported == set(ids) - set(rejected) - set(pending)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["snapshot"]["version"] == 1 and manifest["filter"] == {"review": "approved"}
    assert manifest["counts"]["train"] + manifest["counts"]["validation"] == 14


def test_legacy_export_with_separator_and_stop(proxy: ProxyServer, tmp_path: Path) -> None:
    ids = completions(proxy, *[f"Summarize ticket {i}: the parcel arrived late" for i in
                               range(13)])
    review_all(proxy, ids, edit=ids[:2], reject=ids[12:])
    out = tmp_path / "legacy"
    result = run_cli(proxy, tmp_path, "export", "--name", "tickets", "--format", "legacy",
                     "--base-model", "davinci-002", "--validation", "0.1", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "Dataset check: legacy for davinci-002" in result.stdout
    files, lineage = read_export(out)
    items = check_lineage(proxy, "tickets", files, lineage)
    assert len(items) == 12
    for (split, number), item in items.items():
        prompt, answer = item["current"]
        assert files[split][number - 1] == {"prompt": prompt["content"] + SEPARATOR,
                                            "completion": " " + answer["content"].lstrip()
                                            + "###"}


def test_legacy_rule_violation_names_the_example_and_writes_nothing(
        proxy: ProxyServer, tmp_path: Path) -> None:
    ids = completions(proxy, *[f"plain prompt {i}" for i in range(11)],
                      f"a prompt with{SEPARATOR}inside it")
    review_all(proxy, ids)
    out = tmp_path / "bad"
    result = run_cli(proxy, tmp_path, "export", "--name", "tickets", "--format", "legacy",
                     "--base-model", "davinci-002", "--out", str(out))
    assert result.exit_code == 2
    assert "separator_in_prompt" in flat(result.output) and ids[-1] in flat(result.output)
    assert not out.exists() and not list(tmp_path.glob(".bad*"))
    assert proxy.admin().datasets()["datasets"] == []


def test_preference_export_pairs_the_edit_with_the_logged_answer(proxy: ProxyServer,
                                                                 tmp_path: Path) -> None:
    ids = logged(proxy, *[f"Can I return item {i} after 40 days?" for i in range(15)])
    review_all(proxy, ids, edit=ids[:12])
    out = tmp_path / "pref"
    result = run_cli(proxy, tmp_path, "export", "--name", "prefs", "--format", "preference",
                     "--validation", "0.1", "--out", str(out))
    assert result.exit_code == 0, result.output
    files, lineage = read_export(out)
    items = check_lineage(proxy, "prefs", files, lineage)
    assert {item["id"] for item in items.values()} == set(ids[:12])
    for (split, number), item in items.items():
        assert files[split][number - 1] == {
            "input": {"messages": item["current"][:-1]},
            "preferred_output": [item["current"][-1]],
            "non_preferred_output": [item["original"][-1]],
        }
    skipped = {r["interaction_id"]: r["skipped"] for r in lineage if r["split"] == "skipped"}
    assert skipped == dict.fromkeys(ids[12:], "not_edited")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fine_tune_method"] == "dpo"
    assert manifest["counts"]["skipped"] == {"not_edited": 3}
    # the CLI says why three examples are missing, not only that they are
    assert "skipped not_edited (3): the answer was not edited" in flat(result.output)


def test_classification_labels_from_tags(proxy: ProxyServer, tmp_path: Path) -> None:
    good = completions(proxy, *[f"Great service, order {i}" for i in range(7)],
                       tags="label:positive")
    bad = completions(proxy, *[f"Awful delay, order {i}" for i in range(7)],
                      tags="label:negative")
    review_all(proxy, good + bad)
    out = tmp_path / "sentiment"
    args = ["export", "--name", "sentiment", "--format", "classification", "--base-model",
            "babbage-002", "--labels", "positive,negative", "--positive-class", "positive",
            "--validation", "0.1", "--out", str(out)]
    result = run_cli(proxy, tmp_path, *args)
    assert result.exit_code == 0, result.output
    files, lineage = read_export(out)
    items = check_lineage(proxy, "sentiment", files, lineage)
    assert len(items) == 14
    for (split, number), item in items.items():
        label = "positive" if item["id"] in good else "negative"
        assert files[split][number - 1] == {"prompt": item["current"][0]["content"] + SEPARATOR,
                                            "completion": " " + label}

    # a reviewer adds a second label tag to one item: the export names it and stops
    proxy.admin(REVIEWER_TOKEN).tag(good[0], reviewer="ann", add=["label:negative"])
    result = run_cli(proxy, tmp_path, *args[:-1], str(tmp_path / "again"))
    assert result.exit_code == 2 and "conflicting_labels" in flat(result.output)
    assert good[0] in flat(result.output) and not (tmp_path / "again").exists()


def test_failing_validation_prints_the_report_exits_non_zero_and_writes_nothing(
        proxy: ProxyServer, tmp_path: Path) -> None:
    ids = logged(proxy, *[f"question {i}" for i in range(6)])
    review_all(proxy, ids)
    out = tmp_path / "small"
    result = run_cli(proxy, tmp_path, "export", "--name", "small", "--out", str(out))
    assert result.exit_code == 2
    assert "Dataset check: chat" in result.stdout and "too_few_examples" in result.stdout
    assert "fails validation" in flat(result.output)
    assert "nothing was written" in flat(result.output)
    assert not out.exists() and proxy.admin().datasets()["datasets"] == []


@pytest.mark.parametrize("args, message", [
    (["--name", "../../etc"], "not a dataset name"),
    (["--name", "ok", "--filter", "colour=red"], "--filter"),
])
def test_bad_arguments_are_refused_before_anything(proxy: ProxyServer, tmp_path: Path,
                                                   args: list[str], message: str) -> None:
    result = run_cli(proxy, tmp_path, "export", *args, "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and message in flat(result.output)
    assert not (tmp_path / "o").exists()


def test_filters_select_what_is_exported(proxy: ProxyServer, tmp_path: Path) -> None:
    tagged = logged(proxy, *[f"billing question {i}" for i in range(11)],
                    extra_headers={"x-tuneloop-tags": "billing"})
    other = logged(proxy, *[f"other question {i}" for i in range(3)])
    review_all(proxy, tagged + other)
    out = tmp_path / "billing"
    result = run_cli(proxy, tmp_path, "export", "--name", "billing", "--filter", "tag=billing",
                     "--validation", "0", "--out", str(out))
    assert result.exit_code == 0, result.output
    files, lineage = read_export(out)
    assert {r["interaction_id"] for r in lineage} == set(tagged)
    assert len(files["train"]) == 11 and files["validation"] == []
    shown = run_cli(proxy, tmp_path, "datasets", "show", "billing", "1")
    assert shown.exit_code == 0 and '"tag": "billing"' in flat(shown.output)
    assert "Dataset check" in flat(shown.output)
    listed = run_cli(proxy, tmp_path, "datasets", "list")
    assert "billing" in listed.output


def test_the_commands_are_registered() -> None:
    out = CliRunner().invoke(main, ["--help"]).output
    for command in ("export", "finetune", "jobs", "datasets"):
        assert f"  {command} " in out
    jobs = CliRunner().invoke(main, ["jobs", "--help"]).output
    for command in ("list", "follow", "results", "cancel", "show"):
        assert f"  {command} " in jobs
