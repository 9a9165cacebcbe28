"""A cycle whose data did not change writes no new dataset version or export directory, and
says so (issue 14): real proxy, fake upstream with its fine-tuning jobs, the cycle's library
entry point as `tuneloop cycle` calls it."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ProxyServer
from tests.test_cycle import config, loop, run  # noqa: F401  (loop: the fixture)


def test_unchanged_data_writes_no_dataset_version_and_no_export_directory(
        loop: ProxyServer, tmp_path: Path) -> None:  # noqa: F811
    exports = tmp_path / "exports"
    capped = config(tmp_path, finetune={"max_cost_usd": 0.000001})
    first = run(loop, capped)
    assert first.run["outcome"] == "over_budget"
    assert [v["version"] for v in loop.admin().dataset_versions("support")["versions"]] == [1]
    made = sorted(exports.iterdir())
    assert len(made) == 1

    again = run(loop, capped)  # the same data: version 1 is used again, nothing written
    assert again.run["id"] != first.run["id"] and again.run["outcome"] == "over_budget"
    assert [v["version"] for v in loop.admin().dataset_versions("support")["versions"]] == [1]
    assert sorted(exports.iterdir()) == made
    exported = next(s for s in loop.admin().cycle_run(again.run["id"])["steps"]
                    if s["step"] == "export" and s["status"] == "done")
    assert "has not changed since dataset support version 1" in exported["detail"]["message"]
    assert again.run["state"]["export_path"] == str(made[0])

    trained = run(loop, config(tmp_path))  # trains on version 1's directory
    assert trained.run["outcome"] == "not_promoted" and len(loop.upstream.state.jobs) == 1
    assert trained.run["state"]["export_path"] == str(made[0])

    unchanged = run(loop, config(tmp_path))
    assert unchanged.run["outcome"] == "unchanged" and len(loop.upstream.state.jobs) == 1
    assert f"has not changed since run {trained.run['id']}" in unchanged.message
    assert "no new dataset version or export directory written" in unchanged.message
    assert [v["version"] for v in loop.admin().dataset_versions("support")["versions"]] == [1]
    assert sorted(exports.iterdir()) == made and not list(exports.glob(".*"))
