"""The cycle's `checkpoints` step (with `[evaluate] checkpoints = K`): between `wait` and
`evaluate`, the job's last K checkpoints are evaluated against the current model
(exporter/checkpoints.py) and the best becomes the run's candidate; `evaluate` then gates it as
usual and `canary` promotes it. Each checkpoint's scores and validation loss are kept in the
step's detail. A checkpoint the provider does not serve (404) is kept as not scored, with the
reason (a warning), and the best of the others is chosen; none served fails the step, and so
does one unreachable otherwise (5xx, connection errors: the step is retried). A retry does not
evaluate again a checkpoint this run has a stored evaluation of (the same data, baseline and
settings). Every interval is at Bonferroni's 1 - (1 - confidence) / K for the K asked, here and
in the `evaluate` step's gate: the best of K chosen on the same examples looks better than it
is."""

from __future__ import annotations

from pathlib import Path

from exporter.checkpoints import (
    best_checkpoint,
    evaluate_checkpoints,
    last_checkpoints,
    render_checkpoints,
)
from exporter.cycle_steps import StepContext, StepResult, eval_options, gate_baseline


def checkpoints_step(ctx: StepContext) -> StepResult:
    cfg = ctx.config.evaluate
    final = ctx.state["fine_tuned_model"]
    checkpoints = last_checkpoints(ctx.provider(), ctx.state["job_id"], cfg.checkpoints)
    baseline = gate_baseline(ctx.client, ctx.config)
    options = eval_options(cfg, final, baseline, ctx.run["id"], comparisons=len(checkpoints),
                           alias=ctx.config.alias)
    earlier = ctx.client.eval_runs(limit=EARLIER_RUNS, cycle_run_id=ctx.run["id"])
    results = evaluate_checkpoints(ctx.client, checkpoints, Path(ctx.state["export_path"]),
                                   options, api_key=ctx.api_key, earlier=earlier)
    best = best_checkpoint(results)  # ModelUnreachable when none could be scored
    chosen = {"model": best.checkpoint.model, "step": best.checkpoint.step,
              "id": best.checkpoint.id}
    unscored = [r for r in results if r.not_scored]
    warnings = [f"checkpoint step {r.checkpoint.step} ({r.checkpoint.model}) not scored: "
                f"{r.not_scored}; the best of the other {len(results) - len(unscored)} is "
                f"chosen, the intervals still corrected for the {len(results)} compared"
                for r in unscored]
    return StepResult("evaluate",
                      state={"fine_tuned_model": best.checkpoint.model, "final_model": final,
                             "checkpoint": chosen, "checkpoints_compared": len(checkpoints)},
                      detail={"checkpoints": [r.to_json() for r in results], "best": chosen,
                              **({"not_scored": [r.checkpoint.step for r in unscored]}
                                 if unscored else {})},
                      note=render_checkpoints(results, best), warnings=warnings)


EARLIER_RUNS = 1000
"""Stored eval runs of this cycle run looked at for checkpoints already evaluated (a retry)."""
