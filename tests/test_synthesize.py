"""`tuneloop synthesize` end to end: documents in, pending question→answer items out, through a
real proxy on loopback in front of the fake OpenAI upstream (which scripts both prompts)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from exporter.examples import Example
from exporter.formats import FormatOptions
from exporter.pipeline import ExportOptions, export
from exporter.synthesize.keys import question_key, source_tag
from exporter.synthesize.loader import load_documents
from exporter.synthesize.runner import SynthOptions, plan_chunks
from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, ProxyServer, both_stores
from tests.fakes.synthesis import answer_for, questions_for
from tuneloop.cli import main
from tuneloop.client import AdminClient

pytestmark = both_stores

SECTION = ("Each prompt should end with the same fixed separator, and the separator should not "
           "appear elsewhere in any prompt. During inference every prompt must end with that "
           "separator too, exactly as it did in training, or the model will not know where the "
           "prompt ends.")
GUIDE = (f"# Separators\n\n{SECTION}\n\n## Separators at inference\n\nSeparators matter at "
         f"inference. {SECTION}\n\n## Completions\n\nCompletions start with whitespace because "
         "tokenization attaches the space to the next word. Each completion ends with a stop "
         "sequence that appears nowhere else.")
HTML = ("<html><head><style>h1{}</style><script>var tracking = 1;</script></head><body>"
        "<h1>Validation datasets</h1><p>Validation examples must never appear in the "
        "training file.</p><p>Metrics arrive in a results file.</p></body></html>")
NOTES = "Classification models need the number of classes. Binary models name a positive class."
RECORDS = [{"id": "ft-cli", "text": "Following a fine-tuning job resumes the event stream."},
           {"text": "Hosting stays with the provider; weights are never downloaded."}]
ARGS = ["--questions", "3", "--model", "gpt-4o-mini", "--tag", "synthetic:blog",
        "--max-chunk-tokens", "80", "--concurrency", "4"]


def write_docs(root: Path) -> Path:
    docs = root / "articles"
    docs.mkdir()
    (docs / "guide.md").write_text(GUIDE)
    (docs / "validation.html").write_text(HTML)
    (docs / "notes.txt").write_text(NOTES)
    (docs / "more.jsonl").write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    return docs


def synthesize(proxy: ProxyServer, docs: Path | str, *extra: str) -> Result:
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "OPENAI_API_KEY": None, "TUNELOOP_API": None}
    return CliRunner().invoke(
        main, ["synthesize", "--docs", str(docs), "--api", proxy.url, *ARGS, *extra], env=env)


def expected_pairs(docs: Path | str) -> tuple[dict[str, set[tuple[str, str]]], int]:
    """Per source tag, the pairs a correct run makes: the fake's questions for each chunk,
    deduplicated across the document in chunk order, with the fake's answers; and the number
    of chunks."""
    plan, chunk_count, _ = plan_chunks(load_documents(str(docs)),
                                       SynthOptions("gpt-4o-mini", max_chunk_tokens=80))
    pairs: dict[str, set[tuple[str, str]]] = {}
    for chunks in plan:
        seen: set[str] = set()
        for chunk in chunks:
            for question in questions_for(chunk.text, 3):
                if question_key(question) not in seen:
                    seen.add(question_key(question))
                    pairs.setdefault(chunk.source_tag, set()).add(
                        (question, answer_for(chunk.text, question)))
    return pairs, chunk_count


def items(admin: AdminClient, **filters: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = admin.interactions(limit=200, cursor=cursor, **filters)
        found += page["items"]
        if not (cursor := page["next_cursor"]):
            return found


def pairs_in_queue(admin: AdminClient) -> dict[str, set[tuple[str, str]]]:
    pairs: dict[str, set[tuple[str, str]]] = {}
    for item in items(admin, traffic="synthetic", review="pending"):
        assert item["revision"] == 1 and item["reviewed_by"] == "synthesize", item["id"]
        user, assistant = item["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        src = next(t for t in item["logged_tags"] if t.startswith("src:"))
        pairs.setdefault(src, set()).add((user["content"], assistant["content"]))
    return pairs


def count(proxy: ProxyServer) -> int:
    return int(proxy.sql("SELECT count(*) FROM interactions")[0][0])


def summary_number(output: str, label: str) -> int:
    match = re.search(rf"^{label}\s+(\d+)", output, re.MULTILINE)
    assert match is not None, output
    return int(match.group(1))


def test_documents_become_pending_question_answer_items(proxy: ProxyServer,
                                                       tmp_path: Path) -> None:
    docs = write_docs(tmp_path)
    result = synthesize(proxy, docs, "--api-key", UPSTREAM_KEY)
    assert result.exit_code == 0, result.output
    admin = proxy.admin()
    expected, chunks = expected_pairs(docs)
    assert set(expected) == {source_tag(n) for n in ("guide.md", "validation.html", "notes.txt",
                                                     "more.jsonl:ft-cli", "more.jsonl:2")}
    assert pairs_in_queue(admin) == expected
    total = sum(map(len, expected.values()))
    assert summary_number(result.output, "answers") == total
    assert summary_number(result.output, "failures") == 0
    assert "1 duplicates dropped" in result.output  # "Separators" opens two guide chunks
    # the cost is what the proxy logged for the run's requests (all of them: nothing before)
    logged_cost = proxy.sql("SELECT sum(cost_usd) FROM interactions")[0][0]
    assert logged_cost > 0
    assert re.search(rf"^cost\s+\${logged_cost:.6f}$", result.output, re.MULTILINE), result.output

    logged = items(admin, traffic="synthetic")
    requests = [r for r in proxy.upstream.state.requests if r.path == "/v1/chat/completions"]
    assert chunks == 7  # the guide has three
    assert len(logged) == len(requests) == total + chunks  # one question list per chunk
    sent = sorted(json.dumps(r.json, sort_keys=True) for r in requests)
    assert sorted(json.dumps(i["request"], sort_keys=True) for i in logged) == sent
    assert all(r.headers["authorization"] == f"Bearer {UPSTREAM_KEY}" for r in requests)
    assert not any(k.startswith("x-tuneloop") for r in requests for k in r.headers)
    for item in logged:
        tags = item["logged_tags"]
        assert {"synthetic", "synthetic:blog"} <= set(tags) and item["traffic"] == "synthetic"
        assert any(t.startswith("src:") for t in tags)
        assert any(re.fullmatch(r"chunk:[0-9a-f]{12}", t) for t in tags)
        if "synthesize:questions" in tags:  # question lists are closed, not training pairs
            assert item["review"] == "rejected" and item["reviewed_by"] == "synthesize"
        else:
            assert "synthesize:answer" in tags and item["review"] == "pending"
            question = item["messages"][0]["content"]
            assert f"q:{question_key(question)}" in tags
            detail = admin.interaction(item["id"])  # the reviewer still sees the chunk
            assert detail["original"][0]["content"].endswith(f"Question: {question}")
            assert "###\nGiven the article above." in detail["original"][0]["content"]
            assert [r["action"] for r in detail["revisions"]] == ["revise"]

    before, upstream_before = count(proxy), len(proxy.upstream.state.requests)
    again = synthesize(proxy, docs)
    assert again.exit_code == 0, again.output
    assert summary_number(again.output, "answers") == 0
    assert summary_number(again.output, "requests") == 0
    assert len(proxy.upstream.state.requests) == upstream_before and count(proxy) == before

    # the pairs export as the article trained on them
    admin.bulk_review("approve", reviewer="tester",
                      filter={"traffic": "synthetic", "review": "pending"})
    approved = synthesize(proxy, docs)  # what reviewers did since is theirs: nothing redone
    assert approved.exit_code == 0 and summary_number(approved.output, "requests") == 0
    examples = [Example(i["id"], i["messages"], revision=i["revision"])
                for i in items(admin, tag="synthetic:blog", review="approved")]
    assert len(examples) == total
    chat = export(examples, tmp_path / "chat", ExportOptions(name="qa", workers=1,
                                                             validation_fraction=0.2))
    rows = [json.loads(line) for name in ("train", "validation")
            for line in (chat.path / f"{name}.jsonl").read_text().splitlines()]
    assert sorted((r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows) == \
        sorted(pair for group in expected.values() for pair in group)
    legacy = export(examples, tmp_path / "legacy", ExportOptions(
        name="qa", format=FormatOptions("legacy"), base_model="davinci-002", workers=1,
        validation_fraction=0.2))
    rows = [json.loads(line) for name in ("train", "validation")
            for line in (legacy.path / f"{name}.jsonl").read_text().splitlines()]
    assert len(rows) == total
    questions = {q for group in expected.values() for q, _ in group}
    for row in rows:
        assert row["prompt"].endswith("\n\n###\n\n")
        assert row["prompt"].removesuffix("\n\n###\n\n") in questions
        assert row["completion"].startswith(" ") and row["completion"].endswith("###")


def test_a_failing_chunk_is_reported_and_done_by_the_next_run(proxy: ProxyServer,
                                                             tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Tokens\n\nTokens are billed per request and per epoch.")
    (docs / "flaky.md").write_text("# Outages\n\nUnreachable upstreams answer with errors.")
    (docs / "noquestions.md").write_text("Nothing here. FAKE-NO-QUESTIONS")
    (docs / "noanswer.md").write_text("# Silence\n\nSilence is golden. FAKE-EMPTY-ANSWER")
    state = proxy.upstream.state
    state.fail_containing["Unreachable upstreams"] = 500
    state.fail_next(1, 429, retry_after=0.05)  # retried after retry-after, not a failure
    result = synthesize(proxy, docs, "--retries", "1")
    assert result.exit_code == 1, result.output
    output = " ".join(result.output.split())
    assert "failed: flaky.md chunk 1/1" in output and "HTTP 500" in output
    assert "failed: noquestions.md chunk 1/1" in output
    assert "no question could be parsed" in output
    assert output.count("failed: noanswer.md chunk 1/1") == 3
    assert "the model's answer is empty" in output
    assert "good.md" not in output.split("failures")[1]
    assert summary_number(result.output, "failures") == 5
    admin = proxy.admin()
    assert set(pairs_in_queue(admin)) == {"src:good.md"}
    for item in items(admin, traffic="synthetic"):
        if item["review"] == "pending":  # only pairs wait in the queue: failures are closed
            assert "src:good.md" in item["logged_tags"] and item["edited"]
        else:
            assert item["review"] == "rejected" and item["reviewed_by"] == "synthesize"
            assert item["revision"] == 1

    state.fail_containing.clear()
    state.requests.clear()
    again = synthesize(proxy, docs)
    assert again.exit_code == 1  # the two unparseable documents still fail
    assert "flaky.md" not in again.output.split("failures")[1]
    assert set(pairs_in_queue(admin)) == {"src:good.md", "src:flaky.md"}
    prompts = [r.json["messages"][0]["content"] for r in state.requests if r.json]
    assert not any("Tokens are billed" in p for p in prompts)  # the done chunk is skipped
    assert sum("Unreachable upstreams" in p for p in prompts) == 4  # questions, 3 answers


def test_a_chunk_half_done_by_a_dead_run_is_completed_without_duplicates(
        proxy: ProxyServer, tmp_path: Path) -> None:
    doc = tmp_path / "half.md"
    doc.write_text("# Epochs\n\nThe default number of epochs depends on the training file size.")
    options = SynthOptions("gpt-4o-mini", tags=("synthetic:blog",))
    chunk = plan_chunks(load_documents(str(doc)), options)[0][0][0]
    tags = ["synthetic", "synthetic:blog", chunk.source_tag, f"chunk:{chunk.key}"]
    client = proxy.openai()

    def send(prompt: str, *more: str) -> None:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}],
            extra_headers={"x-tuneloop-traffic": "synthetic",
                           "x-tuneloop-tags": ",".join([*tags, *more])})

    # what a run that died left: the question list, one answer logged twice, never recorded
    send(options.templates.questions_prompt(chunk.text, 3, "half.md"), "synthesize:questions")
    first = questions_for(chunk.text, 3)[0]
    for _ in range(2):
        send(options.templates.answer_prompt(chunk.text, first, "half.md"), "synthesize:answer",
             f"q:{question_key(first)}")
    proxy.wait_logged(3)
    proxy.upstream.state.requests.clear()

    result = synthesize(proxy, doc)
    assert result.exit_code == 0, result.output
    assert "(1 completed from an interrupted run)" in " ".join(result.output.split())
    admin = proxy.admin()
    assert pairs_in_queue(admin) == {chunk.source_tag: {
        (q, answer_for(chunk.text, q)) for q in questions_for(chunk.text, 3)}}
    prompts = [r.json["messages"][0]["content"] for r in proxy.upstream.state.requests]
    assert len(prompts) == 2 and not any(p.endswith(f"Question: {first}") for p in prompts)
    states = sorted(i["review"] for i in items(admin, traffic="synthetic"))
    assert states == ["pending"] * 3 + ["rejected"] * 2  # the duplicate and the list


def test_retry_after_from_the_upstream_reaches_the_backoff(proxy: ProxyServer) -> None:
    import asyncio

    from exporter.synthesize.calls import ModelCaller

    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def call() -> str | None:
        client = proxy.async_openai()
        caller = ModelCaller(client, "gpt-4o-mini", semaphore=asyncio.Semaphore(1), retries=2,
                             backoff_s=0.01, send_key=True, sleep=sleep)
        try:
            reply = await caller.chat("hello", ["synthetic"])
        finally:
            await client.close()
        assert len(reply.failed_ids) == 2 and reply.interaction_id is not None
        return reply.content

    proxy.upstream.state.fail_next(1, 429, retry_after=7)
    proxy.upstream.state.fail_next(1, 503)
    assert asyncio.run(call()) == "echo: hello"
    assert waits[0] == 7.0 and 0.01 <= waits[1] <= 0.02


@pytest.mark.parametrize("bad", [["--tag", "has space"], ["--docs-missing"]])
def test_bad_arguments_are_refused(proxy: ProxyServer, tmp_path: Path, bad: list[str]) -> None:
    if bad == ["--docs-missing"]:
        result = synthesize(proxy, tmp_path / "nothing" / "*.md")
        assert result.exit_code == 2 and "no file matches" in " ".join(result.output.split())
        return
    (tmp_path / "a.md").write_text("Text.")
    result = synthesize(proxy, tmp_path / "a.md", *bad)
    assert result.exit_code == 2 and "invalid tag" in " ".join(result.output.split())


def test_a_changed_template_is_new_work_and_dry_run_asks_nothing(proxy: ProxyServer,
                                                                  tmp_path: Path) -> None:
    doc = tmp_path / "epochs.md"
    doc.write_text("# Epochs\n\nThe default number of epochs depends on the file size.")
    template = tmp_path / "questions.txt"
    template.write_text("Source: {source}\n\n{chunk}\n\n###\nYou are a teacher. Write {n} "
                        "questions that can be answered with the article content.\n")
    state = proxy.upstream.state
    dry = synthesize(proxy, doc, "--dry-run", "--question-template", str(template))
    assert dry.exit_code == 0 and "epochs.md" in dry.output and not state.requests
    assert synthesize(proxy, doc).exit_code == 0
    assert len(state.requests) == 4
    custom = synthesize(proxy, doc, "--question-template", str(template))
    assert custom.exit_code == 0, custom.output
    assert summary_number(custom.output, "requests") == 4  # a new key: the chunk is new work
    prompt = state.requests[4].json["messages"][0]["content"]
    assert prompt.startswith("Source: epochs.md\n\n# Epochs") and "You are a teacher." in prompt
    pending = items(proxy.admin(), traffic="synthetic", review="pending")
    assert len(pending) == 6  # three pairs per template
    (tmp_path / "bad.txt").write_text("{chunk} without a count")
    bad = synthesize(proxy, doc, "--question-template", str(tmp_path / "bad.txt"))
    assert bad.exit_code == 2 and "lacks {n}" in " ".join(bad.output.split())
