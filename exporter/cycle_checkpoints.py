"""The cycle's `checkpoints` step (with `[evaluate] checkpoints = K`): between `wait` and
`evaluate`, the job's last K checkpoints are evaluated against the current model
(exporter/checkpoints.py) and the best becomes the run's candidate; `evaluate` then gates it
as usual and `canary` promotes it. Each checkpoint's scores and validation loss are kept in
the step's detail. Every interval is at Bonferroni's 1 - (1 - confidence) / K, here and in
the `evaluate` step's gate: the best of K chosen on the same examples looks better than it is."""

from __future__ import annotations

from pathlib import Path

from exporter.checkpoints import best_checkpoint, evaluate_checkpoints, last_checkpoints
from exporter.cycle_steps import StepContext, StepResult, eval_options, gate_baseline


def checkpoints_step(ctx: StepContext) -> StepResult:
    cfg = ctx.config.evaluate
    final = ctx.state["fine_tuned_model"]
    checkpoints = last_checkpoints(ctx.provider(), ctx.state["job_id"], cfg.checkpoints)
    baseline = gate_baseline(ctx.client, ctx.config)
    options = eval_options(cfg, final, baseline, ctx.run["id"], comparisons=len(checkpoints),
                           alias=ctx.config.alias)
    results = evaluate_checkpoints(ctx.client, checkpoints, Path(ctx.state["export_path"]),
                                   options, api_key=ctx.api_key)
    best = best_checkpoint(results)
    chosen = {"model": best.checkpoint.model, "step": best.checkpoint.step,
              "id": best.checkpoint.id}
    return StepResult("evaluate",
                      state={"fine_tuned_model": best.checkpoint.model, "final_model": final,
                             "checkpoint": chosen, "checkpoints_compared": len(results)},
                      detail={"checkpoints": [r.to_json() for r in results], "best": chosen})
