"""Which answers the judge is shown as a human reviewer's reference: only a final answer the
reviewer changed. An edit of the prompt alone (a typo fixed) keeps the logged model's answer,
which is no reference (the baseline would be judged against its own words)."""

from __future__ import annotations

import json
from pathlib import Path

from exporter.datasets import build_dataset
from exporter.evaluate import EvalOptions, evaluate
from exporter.pipeline import ExportOptions
from tests.conftest import REVIEWER_TOKEN, UPSTREAM_KEY, ProxyServer
from tests.fakes.judge import FakeJudge
from tests.test_judge import JUDGE, judged_with_references
from tests.test_review_api import logged

BASELINE, CANDIDATE = "gpt-4o-mini", "ft:gpt-4o-mini-2024-07-18:acme::c1"


def test_only_an_edited_answer_is_a_reference_not_a_prompt_edit(proxy: ProxyServer,
                                                                tmp_path: Path) -> None:
    ids = logged(proxy, *[f"Wher is my parcel number {i}?" for i in range(30)])
    reviewer = proxy.admin(REVIEWER_TOKEN)
    answer_edited = set(ids[::3])
    for i in ids:
        item = reviewer.interaction(i)
        messages = [dict(m) for m in item["messages"]]
        messages[1]["content"] = messages[1]["content"].replace("Wher ", "Where ")
        if i in answer_edited:
            messages[-1]["content"] = "Your parcel arrives tomorrow."
        reviewer.review(i, "edit", reviewer="ann", expected_revision=item["revision"],
                        messages=messages)
    data = tmp_path / "qa"
    build_dataset(reviewer, data, ExportOptions(name="qa", validation_fraction=0.3, workers=1))
    lineage = [json.loads(line) for line in (data / "lineage.jsonl").read_text().splitlines()]
    assert {r["interaction_id"] for r in lineage if r["edited"]} == answer_edited

    proxy.upstream.state.judges[JUDGE] = FakeJudge(prefer="echo:")
    proxy.upstream.state.model_replies[CANDIDATE] = "Your parcel is on its way."
    report = evaluate(proxy.admin(), data, EvalOptions(CANDIDATE, BASELINE, scorer="judge",
                                                       judge_model=JUDGE), api_key=UPSTREAM_KEY)
    _, asked = judged_with_references(proxy, data, report, answer_edited)
    references = [text for text in asked if "<<<REFERENCE>>>" in text]
    assert all("Your parcel arrives tomorrow." in text for text in references)
    assert not any("echo: Wher" in text.split("<<<REFERENCE>>>", 1)[-1].split(
        "<<<END REFERENCE>>>")[0] for text in references)
