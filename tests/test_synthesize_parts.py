"""The pure parts of `tuneloop synthesize`: question and answer parsing, loading, chunking,
tags, templates, retry timing."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import pytest

from exporter.synthesize.calls import backoff_seconds, retry_after_seconds
from exporter.synthesize.chunking import chunk_budget, sections, split_text
from exporter.synthesize.keys import (
    TAG_PATTERN,
    checked_tag,
    normalize_question,
    question_key,
    source_tag,
)
from exporter.synthesize.loader import html_to_text, load_documents
from exporter.synthesize.parse import parse_answer, parse_questions
from exporter.synthesize.templates import Templates, render
from exporter.tokens import token_counter
from tests.fakes.synthesis import SHAPES, answer_for, answer_text, question_list, questions_for
from tuneloop.errors import ConfigError

XYZ = ["What is X?", "Why is Y?", "How does Z work?"]


@pytest.mark.parametrize(("text", "expected"), [
    ("1. What is X?\n2. Why is Y?\n3. How does Z work?", XYZ),
    ("1) What is X?\n2) Why is Y?\n3) How does Z work?", XYZ),
    ("(1) What is X?\n(2) Why is Y?\n(3) How does Z work?", XYZ),
    ("Q1: What is X?\nQ2: Why is Y?\nQ3: How does Z work?", XYZ),
    ("Question 1: What is X?\nQuestion 2: Why is Y?\nQuestion 3: How does Z work?", XYZ),
    ("- What is X?\n* Why is Y?\n• How does Z work?", XYZ),
    ("a) What is X?\nb) Why is Y?\nc) How does Z work?", XYZ),
    ("Sure! Here are three questions based on the article:\n\n1. What is X?\n\n2. Why is Y?\n\n"
     "3. How does Z work?\n\nLet me know if you need more.", XYZ),
    ("Q1: What is X?\nA1: X is a letter.\nQ2: Why is Y?\nAnswer: because.\n"
     "Q3: How does Z work?\nA: well.", XYZ),
    ("**1. What is X?**\n**2.** Why is Y?\n3. **How does Z work?**", XYZ),
    ("1. What is X?\n2. what is x\n3. WHAT IS X ?!\n4. Why is Y?\n5. How does Z work?", XYZ),
    ("1.\nWhat is\nX?\n2. Why is Y?\n3. How does Z\nwork?", XYZ),
    ("1. What is X? (section 1)\n2. Why is Y?\n3. How does Z work?", XYZ),
    ("- What is X\n- Why is Y.\n- How does Z work", XYZ),
    ('["What is X?", "Why is Y?", "How does Z work?"]', XYZ),
    ('```json\n{"questions": ["What is X?", "Why is Y?", "How does Z work?"]}\n```', XYZ),
    ("What is X? Why is Y? How does Z work?", XYZ),
    ("Here you go: What is X?\nWhy is Y?\n\nHow does Z work?", XYZ),
    ("What is X\nWhy is Y\nHow does Z work", XYZ),
    ("### Questions\n1. What is X?\n2. Why is Y?\n3. How does Z work?", XYZ),
    ("1. Explain the role of X.\n2. Name the stop sequence",
     ["Explain the role of X.", "Name the stop sequence"]),
    ("1. Basics:\n   - What is X?\n   - Why is Y?", ["What is X?", "Why is Y?"]),
    ("I'm sorry, I can't write questions about this text.", []),
    ("", []),
    ("1. ?\n2. ...", []),
])
def test_question_lists_in_many_shapes(text: str, expected: list[str]) -> None:
    assert parse_questions(text) == expected


def test_question_list_is_capped_after_deduplication() -> None:
    text = "1. What is X?\n2. What is x?\n3. Why is Y?\n4. How does Z work?\n5. Who is W?"
    assert parse_questions(text, 3) == XYZ
    assert parse_questions(None) == []


@pytest.mark.parametrize(("text", "expected"), [
    ("The separator ends the prompt.", "The separator ends the prompt."),
    ("Answer: The separator ends the prompt.", "The separator ends the prompt."),
    ("**A:** It ends\nthe prompt.", "It ends the prompt."),
    ('"The separator ends the prompt."', "The separator ends the prompt."),
    ("Q: What ends it?\nA: The separator.", "The separator."),
    ("```\nThe separator.\n```", "The separator."),
    ("A-list models exist.", "A-list models exist."),
    ("   \n", None),
    ("Answer:", None),
    (None, None),
])
def test_answers_are_cleaned(text: str | None, expected: str | None) -> None:
    assert parse_answer(text) == expected


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_of_the_fake_parses_to_its_questions(shape: str) -> None:
    article = (f"# Separators FAKE-SHAPE:{shape}\n\nEach prompt ends with a fixed separator. "
               "Completions start with whitespace. Tokenization splits words.")
    assert parse_questions(question_list(article, 4), 4) == questions_for(article, 4)
    for question in questions_for(article, 4):
        assert parse_answer(answer_text(article, question)) == answer_for(article, question)


def test_questions_normalize_for_deduplication() -> None:
    assert normalize_question("  What IS the separator?! ") == "what is the separator"
    assert question_key("What is X?") == question_key("what is x") != question_key("What is Y?")


def test_source_tags_are_valid_and_bounded() -> None:
    assert source_tag("blog/2023 post.md") == "src:blog-2023-post.md"
    long = source_tag("a/" * 60 + "é.md")
    other = source_tag("a/" * 60 + "e.md")
    assert len(long) <= 64 and TAG_PATTERN.match(long) and long != other
    assert TAG_PATTERN.match(source_tag("???"))
    assert checked_tag("synthetic:blog") == "synthetic:blog"
    with pytest.raises(ConfigError, match="invalid tag"):
        checked_tag("has space")


def test_html_is_reduced_to_text_with_headings() -> None:
    html = ("<html><head><title>T</title><style>p{color:red}</style></head><body>"
            "<script>alert('x')</script><h1>Fine-tuning</h1><p>Prompts end with a "
            "<b>separator</b>.<br>Always.</p><ul><li>one</li><li>two &amp; three</li></ul>"
            "<h2>Completions</h2><pre>code  stays\n  indented</pre><noscript>no</noscript>"
            "</body></html>")
    assert html_to_text(html) == (
        "# Fine-tuning\n\nPrompts end with a separator. Always.\n\n- one\n\n- two & three\n\n"
        "## Completions\n\ncode  stays\n  indented")


def test_documents_from_a_folder_a_glob_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.md").write_text("---\ntitle: A\n---\n# A\n\nText of a.")
    (tmp_path / "docs" / "sub" / "b.html").write_text("<p>Text of b.</p><script>x</script>")
    (tmp_path / "docs" / "c.txt").write_text("Text of c.")
    (tmp_path / "docs" / "empty.md").write_text("  \n")
    (tmp_path / "docs" / "image.png").write_bytes(b"\x89PNG")
    records = [{"id": "r1", "text": "Text one."}, {"text": "Text two."}]
    (tmp_path / "docs" / "d.jsonl").write_text("\n".join(map(json.dumps, records)) + "\n\n")
    found = {d.name: d.text for d in load_documents(str(tmp_path / "docs"))}
    assert found == {"a.md": "# A\n\nText of a.", "c.txt": "Text of c.",
                     "d.jsonl:r1": "Text one.", "d.jsonl:2": "Text two.",
                     "sub/b.html": "Text of b."}
    assert [d.name for d in load_documents(str(tmp_path / "docs" / "*.md"))] == [
        (tmp_path / "docs" / "a.md").as_posix()]
    (tmp_path / "bad.jsonl").write_text('{"body": "no text"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:1 has no string `text`"):
        load_documents(str(tmp_path / "bad.jsonl"))
    with pytest.raises(ConfigError, match="no file matches"):
        load_documents(str(tmp_path / "nothing-*.md"))


def test_chunks_split_on_headings_then_paragraphs_within_the_budget() -> None:
    counter = token_counter("o200k_base")
    paragraph = "Each prompt should end with the same fixed separator, said the article. " * 6
    text = (f"# One\n\n{paragraph}\n\n```\n# not a heading\n```\n\n## Two\n\n{paragraph}\n\n"
            f"{paragraph}\n\n{paragraph}\n\n## Three\n\nShort.")
    assert [s.splitlines()[0] for s in sections(text)] == ["# One", "## Two", "## Three"]
    budget = 160
    chunks = split_text(text, budget, counter)
    assert all(counter.text(c) <= budget for c in chunks)
    assert chunks[0].startswith("# One") and "# not a heading" in chunks[0]
    two = [c for c in chunks if c.startswith("## Two")]
    assert len(two) >= 2  # the long section, split on paragraphs, each part under its heading
    assert split_text("Short text.", budget, counter) == ["Short text."]
    words = "word " * 1000  # no paragraph, line or sentence to split on
    assert all(counter.text(c) <= 100 for c in split_text(words, 100, counter))
    assert chunk_budget("gpt-4o-mini", None, 100) == 3000
    assert chunk_budget("gpt-4", 50_000, 100) == 8192 - 100 - 1024


def test_templates_need_their_placeholders_and_never_reexpand() -> None:
    templates = Templates()
    prompt = templates.answer_prompt("Text with {question} inside.", "Why?", "a.md")
    assert prompt.startswith("Text with {question} inside.\n\n###\n") and prompt.endswith(
        "Question: Why?")
    assert "Write 3 questions that can be answered with the article content." in (
        templates.questions_prompt("Text.", 3, "a.md"))
    assert render("{chunk} {other}", chunk="x") == "x {other}"
    with pytest.raises(ConfigError, match=r"lacks \{n\}"):
        Templates(questions="{chunk} write questions")
    assert templates.fingerprint(3) != templates.fingerprint(4)


def test_retry_after_is_honoured() -> None:
    assert retry_after_seconds(httpx.Headers({"retry-after": "7"})) == 7.0
    assert retry_after_seconds(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    assert retry_after_seconds(httpx.Headers({"retry-after": "soon"})) is None
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert retry_after_seconds(httpx.Headers({"retry-after": past})) == 0.0
    rng = random.Random(1)
    assert backoff_seconds(0, 0.5, 7.0, rng) == 7.0
    delays = [backoff_seconds(attempt, 0.5, None, rng) for attempt in range(4)]
    assert all(0.25 * 2 ** a <= d <= 0.5 * 2 ** a for a, d in enumerate(delays))
