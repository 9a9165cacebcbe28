"""`export --strip-template` in the exporter library: each example keeps what varies; one that
does not hold the template is skipped (never kept whole) and warned about, with its id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from exporter.checks import chat_row_problems
from exporter.examples import Example
from exporter.formats import FormatOptions
from exporter.pipeline import ExportOptions, export
from exporter.strip import TemplateStrip
from tuneloop.prompt_template import PromptTemplate

SYSTEM = "You are Acme's support bot. Never promise refunds."
SHOT = [{"role": "user", "content": "Q: hi\nBe brief."},
        {"role": "assistant", "content": "Hello from the example turn."}]
TEMPLATE = PromptTemplate(name="bot", version=3, system_prompt=SYSTEM, few_shot=tuple(SHOT),
                          user_prefix="Q: ", user_suffix="\nBe brief.")


def example(i: int, messages: list[dict[str, Any]] | None = None) -> Example:
    if messages is None:
        messages = [{"role": "system", "content": SYSTEM}, *SHOT,
                    {"role": "user", "content": f"Q: where is order {i}?\nBe brief."}]
    return Example(f"ix-{i:03d}", [*messages, {"role": "assistant", "content": f"Order {i} ok."}])


def mismatches() -> list[Example]:
    full = example(0).messages[:-1]
    return [
        example(900, [full[0], full[1], full[3]]),  # a few-shot turn missing
        example(901, [*full[:3], {"role": "user", "content": "Q: where is it?"}]),  # no suffix
        example(902, [{"role": "system", "content": "Other."}, *full[1:]]),
    ]


def test_stripped_examples_keep_what_varies_and_mismatches_are_skipped(tmp_path: Path) -> None:
    examples = [example(i) for i in range(30)] + mismatches()
    options = ExportOptions(name="bot", workers=1,
                            strip=TemplateStrip(TEMPLATE, "Acme support."))
    result = export(examples, tmp_path / "out", options)
    data = b"".join((tmp_path / "out" / f"{s}.jsonl").read_bytes()
                    for s in ("train", "validation"))
    assert SYSTEM.encode() not in data and b"example turn" not in data and b"Be brief" not in data
    rows = [json.loads(line) for line in data.splitlines()]
    assert len(rows) == 30 and all(chat_row_problems(r) == [] for r in rows)
    assert {r["messages"][1]["content"] for r in rows} == {
        f"where is order {i}?" for i in range(30)}
    assert all(r["messages"][0] == {"role": "system", "content": "Acme support."} for r in rows)
    warning = next(f for f in result.report.warnings if f.code == "template_mismatch")
    assert warning.count == 3 and set(warning.examples) == {"ix-900", "ix-901", "ix-902"}
    assert "bot-v3" in warning.message
    assert result.manifest["counts"]["skipped"] == {"template_mismatch": 3}
    lineage = [json.loads(x) for x in (tmp_path / "out" / "lineage.jsonl").read_text()
               .splitlines()]
    # each skipped example's lineage record says which part differed
    assert {r["interaction_id"]: r["skipped"] for r in lineage if r["split"] == "skipped"} == {
        "ix-900": "template_mismatch:few_shot", "ix-901": "template_mismatch:suffix",
        "ix-902": "template_mismatch:system_prompt"}


def test_pool_workers_strip_too(tmp_path: Path) -> None:
    """More than one chunk goes to spawned workers: the template travels with the chunk spec."""
    examples = [example(i) for i in range(40)] + mismatches()
    options = ExportOptions(name="bot", workers=2, chunk_size=10, strip=TemplateStrip(TEMPLATE))
    result = export(examples, tmp_path / "out", options)
    assert result.manifest["counts"]["train"] + result.manifest["counts"]["validation"] == 40
    assert result.manifest["template"] == {
        "ref": "bot-v3", "replacement_system_prompt": None,
        "mismatches": {"few_shot": 1, "suffix": 1, "system_prompt": 1}}
    data = (tmp_path / "out" / "train.jsonl").read_bytes()
    assert SYSTEM.encode() not in data and b'"role":"system"' not in data.replace(b" ", b"")


def test_legacy_prompt_template_with_a_replacement_in_front(tmp_path: Path) -> None:
    template = PromptTemplate(name="qa", version=1, prompt_prefix="Article:\n",
                              prompt_suffix="\nQuestions:")
    examples = [Example(f"ix-{i:03d}", [
        {"role": "user", "content": f"Article:\nText number {i}.\nQuestions:"},
        {"role": "assistant", "content": f"Answer {i}."}]) for i in range(12)]
    examples.append(Example("ix-bad", [{"role": "user", "content": "no template"},
                                       {"role": "assistant", "content": "x"}]))
    options = ExportOptions(name="qa", workers=1, base_model="davinci-002",
                            format=FormatOptions("legacy"),
                            strip=TemplateStrip(template, "QA: "))
    result = export(examples, tmp_path / "out", options)
    rows = [json.loads(line) for s in ("train", "validation")
            for line in (tmp_path / "out" / f"{s}.jsonl").read_text().splitlines()]
    assert sorted(r["prompt"] for r in rows) == sorted(
        f"QA: Text number {i}.\n\n###\n\n" for i in range(12))
    assert result.manifest["counts"]["skipped"] == {"template_mismatch": 1}


def test_a_replacement_never_deletes_an_examples_own_system_message(tmp_path: Path) -> None:
    """A template without a system prompt: an example's own system message varies (a
    tenant's instructions), so `--system-prompt` must not silently drop it. Such examples are
    skipped and counted; those without one get the replacement."""
    template = PromptTemplate(name="wrap", version=1, user_prefix="Q: ", user_suffix="\nBe brief.")

    def asked(i: int, system: str | None) -> Example:
        head = [{"role": "system", "content": system}] if system else []
        return example(i, [*head, {"role": "user", "content": f"Q: order {i}?\nBe brief."}])

    examples = [asked(i, None) for i in range(20)] + [
        asked(900 + i, f"Tenant {i}: answer in French.") for i in range(3)]
    result = export(examples, tmp_path / "out", ExportOptions(
        name="wrap", workers=1, strip=TemplateStrip(template, "Acme support.")))
    data = b"".join((tmp_path / "out" / f"{s}.jsonl").read_bytes()
                    for s in ("train", "validation"))
    assert b"Tenant" not in data  # not kept with its text gone: skipped
    rows = [json.loads(line) for line in data.splitlines()]
    assert len(rows) == 20 and all(
        r["messages"][0] == {"role": "system", "content": "Acme support."} for r in rows)
    warning = next(f for f in result.report.warnings if f.code == "template_mismatch")
    assert warning.count == 3 and set(warning.examples) == {"ix-900", "ix-901", "ix-902"}
    assert result.manifest["template"]["mismatches"] == {"own_system_prompt": 3}

    # without a replacement, each example's own system message is kept as what varies
    export(examples, tmp_path / "kept", ExportOptions(name="wrap", workers=1,
                                                      strip=TemplateStrip(template)))
    kept = b"".join((tmp_path / "kept" / f"{s}.jsonl").read_bytes()
                    for s in ("train", "validation"))
    assert kept.count(b"answer in French") == 3 and b"Be brief" not in kept
