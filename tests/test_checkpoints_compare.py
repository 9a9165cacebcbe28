"""`tuneloop jobs checkpoints JOB` without `--dataset` shows each checkpoint's stored scores
with the model they are against and the dataset, and ranks only evaluations comparable with
each other (same dataset, baseline, scorer): a checkpoint that looks good against a weak model
is not the best (r14g #7). Through a real proxy and the fake OpenAI's checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from exporter.evaluate import EvalOptions, evaluate
from tests import test_cycle
from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, ProxyServer
from tests.test_cycle import CURRENT, config, run
from tuneloop.cli import main

loop = test_cycle.loop  # approved traffic, the alias on the current model, fast fine-tuning
WEAK = "weak-model"


def test_only_comparable_stored_evaluations_are_ranked(loop: ProxyServer,
                                                       tmp_path: Path) -> None:
    first = run(loop, config(tmp_path))
    [job] = loop.upstream.state.jobs.values()
    export_dir = Path(first.run["state"]["export_path"])
    names = {s: f"{job.model_name()}:ckpt-step-{s}" for s in (6, 8, 10)}
    loop.upstream.state.model_replies.update({names[10]: "I don't know.",
                                              WEAK: "I don't know."})
    # step 10 (worse) against a weak model looks fine; step 6 against the current model
    for step, baseline in ((10, WEAK), (6, CURRENT)):
        evaluate(loop.admin(), export_dir, EvalOptions(names[step], baseline),
                 api_key=UPSTREAM_KEY)
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN}
    command = ["jobs", "checkpoints", job.id, "--api", loop.url]
    shown = CliRunner().invoke(main, command, env=env)
    assert shown.exit_code == 0, shown.output
    assert "<- best" not in shown.output, shown.output
    header, *rows = shown.output.splitlines()
    assert "against" in header and "dataset" in header
    lines = {row.split()[0]: row for row in rows}
    assert lines["10"].split()[-3:] == [WEAK, export_dir.name, names[10]]
    assert lines["6"].split()[-3:] == [CURRENT, export_dir.name, names[6]]
    said = " ".join(shown.output.split())
    assert "not comparable, no best picked: these evaluations differ (step 6: against " \
        f"{CURRENT} on {export_dir} (exact); step 10: against {WEAK} on {export_dir}" in said
    as_json = json.loads(CliRunner().invoke(main, [*command, "--json"], env=env).output)
    assert as_json["best"] is None
    by_step = {c["step"]: c for c in as_json["checkpoints"]}
    assert (by_step[10]["baseline"], by_step[6]["baseline"]) == (WEAK, CURRENT)
    assert by_step[6]["dataset"] == str(export_dir)

    # step 10 against the current model too: each checkpoint's run of that comparison
    evaluate(loop.admin(), export_dir, EvalOptions(names[10], CURRENT), api_key=UPSTREAM_KEY)
    shown = CliRunner().invoke(main, command, env=env)
    lines = {row.split()[0]: row for row in shown.output.splitlines()[1:]}
    assert lines["6"].endswith("<- best") and "best" not in lines["10"], shown.output
    assert lines["10"].split()[-3:] == [CURRENT, export_dir.name, names[10]]
    assert "not comparable" not in shown.output
