"""`tuneloop synthesize` rerun with another --model or --tag (issue 14): it says which chunks it
skipped, done by which earlier model and tags, and why they are not asked again. Real proxy,
fake upstream, the CLI's main function."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ProxyServer
from tests.test_export_cli import flat
from tests.test_synthesize import NOTES, summary_number, synthesize


def test_a_rerun_with_another_model_or_tag_says_what_it_skipped_and_why(
        proxy: ProxyServer, tmp_path: Path) -> None:
    docs = tmp_path / "notes.txt"
    docs.write_text(NOTES)
    first = synthesize(proxy, docs)
    assert first.exit_code == 0, first.output
    chunks = summary_number(first.output, "chunks")

    again = synthesize(proxy, docs, "--model", "gpt-4o", "--tag", "synthetic:v2")
    assert again.exit_code == 0, again.output
    said = flat(again.output)
    assert f"skipped {chunks} chunks done by an earlier run (not asked again): {chunks} by " \
           "model gpt-4o-mini, tags synthetic:blog" in said
    assert "this run asks model gpt-4o, tags synthetic:blog, synthetic:v2, but a chunk is " \
           "done once whatever --model or --tag" in said

    same = synthesize(proxy, docs)  # the same settings: what was skipped, and nothing more
    assert "skipped" in flat(same.output) and "this run asks" not in flat(same.output)
