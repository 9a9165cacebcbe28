"""Templates from traffic (tuneloop/prompt_discovery.py): pure, over hand-made samples."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tuneloop.errors import BadRequest
from tuneloop.prompt_discovery import (
    Sample,
    discover,
    find_prefix,
    find_suffix,
    sample_of,
    shared_prefix,
)
from tuneloop.prompt_template import PromptTemplate, matches_messages

SYSTEM = "You are Acme's support bot.\nRules: be brief, be kind, never promise refunds. ñ 日本"
FEW_SHOT = [
    {"role": "user", "content": "Where is my order?"},
    {"role": "assistant", "content": "Check Orders > Track."},
]
QUESTIONS = ["My parcel is late", "Can I change my address?", "Refund please", "Login fails",
             "Where is the invoice", "Password reset", "Shipping to Spain?", "Bulk discount?",
             "Cancel my order", "Is it in stock?"]


def chars(text: str) -> int:
    return len(text)


def chat(question: str, system: str = SYSTEM, few_shot: bool = True) -> Sample:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    if few_shot:
        messages += [dict(t) for t in FEW_SHOT]
    messages.append({"role": "user", "content": f"Customer says:\n{question}\nAnswer briefly."})
    return Sample(messages=messages)


def test_finds_system_prompt_few_shot_and_user_affixes_with_their_share() -> None:
    samples = [chat(q) for q in QUESTIONS * 9]  # 90 with the template
    samples += [Sample(messages=[{"role": "user", "content": f"hi {i}"}]) for i in range(10)]
    found = discover(samples, chars)
    assert found["sample"] == {"chat": 100, "legacy": 0}
    best = found["candidates"][0]
    assert best["index"] == 1 and best["kind"] == "chat"
    assert best["parts"] == {
        "system_prompt": SYSTEM,
        "few_shot": FEW_SHOT,
        "user_prefix": "Customer says:\n",
        "user_suffix": "\nAnswer briefly.",
        "prompt_prefix": "",
        "prompt_suffix": "",
    }
    assert best["matched"] == 90 and best["share"] == 0.9
    assert best["part_tokens"]["system_prompt"] == len(SYSTEM) + 3  # + the message framing
    assert best["tokens"] == sum(best["part_tokens"].values())
    # smaller candidates follow, each with its own share
    kinds = [tuple(k for k, v in c["parts"].items() if v) for c in found["candidates"]]
    assert ("system_prompt",) in kinds and ("user_suffix",) in kinds


def test_below_the_threshold_nothing_is_a_part() -> None:
    samples = [chat(q) for q in QUESTIONS * 7]  # 70%
    samples += [chat(q, system=f"other {i}", few_shot=False) for i, q in enumerate(QUESTIONS * 3)]
    found = discover(samples, chars)
    parts = found["candidates"][0]["parts"]
    assert parts["system_prompt"] is None and parts["few_shot"] == []
    assert parts["user_prefix"] == "Customer says:\n"  # shared by all 100
    assert discover(samples, chars, threshold=0.7)["candidates"][0]["parts"]["system_prompt"] \
        == SYSTEM


def test_a_few_shot_run_ends_with_an_assistant_turn_and_leaves_a_user_message() -> None:
    # every request repeats the same first user turn, but the answer varies: not few-shot
    samples = [
        Sample(messages=[{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": "Where is my order?"},
                         {"role": "assistant", "content": f"answer {i}"},
                         {"role": "user", "content": f"q{i}"}])
        for i in range(20)
    ]
    assert discover(samples, chars)["candidates"][0]["parts"]["few_shot"] == []
    # a conversation that is only the shared turns has no varying user message after them
    only = [Sample(messages=[{"role": "system", "content": SYSTEM}, *FEW_SHOT])] * 20
    assert discover(only, chars)["candidates"][0]["parts"]["few_shot"] == []


def test_prefixes_are_cut_at_a_boundary_and_short_ones_are_dropped() -> None:
    texts = ["Question: where is it", "Question: what is it", "Question: why not"]
    assert shared_prefix(texts, 2) == "Question: wh"
    assert find_prefix(texts, 3) == "Question: "
    assert find_prefix(["Q: a", "Q: b"], 2) == ""  # "Q: " is under 4 characters
    assert find_suffix(["late.\nAnswer briefly.", "now?\nAnswer briefly."], 2) \
        == "\nAnswer briefly."
    # a shared word end is not cut into ("ly" of "briefly"/"shortly")
    assert find_suffix(["say it briefly", "say it shortly"], 2) == ""
    assert find_prefix([], 1) == "" and find_prefix(["abc"], 2) == ""


def test_legacy_prompts_get_prefix_and_suffix() -> None:
    samples = [Sample(prompt=f"Article:\n{q}\n\n###\nQuestions:") for q in QUESTIONS]
    found = discover(samples, chars)
    best = found["candidates"][0]
    assert best["kind"] == "legacy" and best["share"] == 1.0
    assert best["parts"]["prompt_prefix"] == "Article:\n"
    assert best["parts"]["prompt_suffix"] == "\n\n###\nQuestions:"


def test_multimodal_and_unicode_user_messages() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}
    samples = []
    for q in QUESTIONS:
        sample = chat(q + " ✓")
        assert sample.messages is not None
        last = dict(sample.messages[-1])
        last["content"] = [{"type": "text", "text": f"Customer says:\n{q} ✓"}, image,
                           {"type": "text", "text": "\nAnswer briefly."}]
        samples.append(Sample(messages=[*sample.messages[:-1], last]))
    best = discover(samples, chars)["candidates"][0]
    assert best["parts"]["user_prefix"] == "Customer says:\n"
    assert best["parts"]["user_suffix"] == "\nAnswer briefly."
    template = PromptTemplate(name="t", version=1, **best["parts"])
    assert all(matches_messages(template, s.messages) for s in samples if s.messages)


def test_sample_of_reads_only_chat_messages_and_single_prompts() -> None:
    assert sample_of("chat.completions", {"messages": [{"role": "user", "content": "x"}]})
    assert sample_of("chat.completions", {"messages": []}) is None
    assert sample_of("completions", {"prompt": ["one"]}) == Sample(prompt="one")
    assert sample_of("completions", {"prompt": ["a", "b"]}) is None
    assert sample_of("completions", {"prompt": [1, 2]}) is None
    assert sample_of("embeddings", {"input": "x"}) is None
    assert sample_of("chat.completions", "junk") is None


def test_empty_and_odd_samples_give_no_candidates() -> None:
    assert discover([], chars)["candidates"] == []
    odd = [Sample(messages=[None, 3, "x"]), Sample(messages=[{"role": "user"}])]  # type: ignore[list-item]
    assert discover(odd, chars)["candidates"] == []


@pytest.mark.parametrize("threshold", [0.2, 1.5, True, "0.8"])
def test_bad_thresholds_are_refused(threshold: Any) -> None:
    with pytest.raises(BadRequest, match="threshold"):
        discover([], chars, threshold)


def test_a_discovery_job_runs_in_a_worker_process_and_names_candidates_by_content() -> None:
    """The proxy runs `analyse` in a process of its own: the job and its answer cross a pickle
    boundary. A candidate's id is a hash of its parts: the same parts, the same id."""
    import orjson

    from storage.compute_worker import ComputeWorker
    from tuneloop.discovery_job import DiscoveryJob, analyse, candidate_id

    rows = [("chat.completions", orjson.dumps({"messages": [
        {"role": "system", "content": "You are a terse bot."},
        {"role": "user", "content": f"Question: {q}?"}]}).decode(), "gpt-4o-mini")
        for q in ("where", "why", "when", "how")] + [("chat.completions", "{not json", None)]
    job = DiscoveryJob(alias="bot", threshold=0.8, rows=rows, read={"considered": 5})
    worker = ComputeWorker(retry_after_s=0.0)
    try:
        found = worker.run(analyse, job)
        assert worker.failures == 0 and worker.worker_pid() not in (None, os.getpid())
    finally:
        worker.close()
    assert found == analyse(job)
    assert found["read"] == {"considered": 5, "rows": 5, "unreadable": 1, "skipped": 0}
    best = found["candidates"][0]
    assert best["parts"]["system_prompt"] == "You are a terse bot."
    assert best["id"] == candidate_id(dict(best["parts"])) and len(best["id"]) == 12
    assert len({c["id"] for c in found["candidates"]}) == len(found["candidates"])


def test_a_discovered_prefix_never_ends_inside_a_word() -> None:
    """The shared start `Customer ref: ACME-` ends inside the word `ACME-1`: cut back to the
    white space before it (and `O'` of `O'Brien` / `O'Neil` likewise)."""
    refs = [f"Customer ref: ACME-{n} where is it?" for n in range(1, 9)]
    assert find_prefix(refs, 8) == "Customer ref: "
    names = ["Tell me about O'Brien", "Tell me about O'Neil", "Tell me about O'Hara"]
    assert find_prefix(names, 3) == "Tell me about "
    assert find_prefix(["Question: why", "Question:how"], 2) == "Question:"
