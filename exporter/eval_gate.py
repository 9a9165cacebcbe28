"""The evaluation gate: whether an evaluation report lets its candidate be promoted, and why
not. One function for every door a candidate can go through (`tuneloop cycle`'s evaluate step,
`tuneloop jobs checkpoints --promote`), so none of them promotes a model another would refuse.

The candidate passes when all of these hold:
- the margin's lower confidence bound (the point margin with `gate = "point"`) is above 0 and
  at least `margin`; for the judge with a `margin` above 0, an exact test that also takes the
  decided share as uncertain agrees (exporter/margin_test.py; "above 0" alone is the exact
  sign test);
- at most `max_error_share` of the examples have a failed request on either side (judge: a
  failed judgement too): many of them hide the rest. The candidate's failures also count
  against it in the scores (a wrong answer; judge: a loss), and so does a pair the judge
  could not judge (a loss: no evidence for the candidate); the baseline's are no evidence
  either way (the pair is left out, exporter/eval_report.py);
- judge: at least `min_decided` pairs were decided (a win or a loss; ties and errors are not);
- other scorers: at least `min_discordant` examples where the two models scored differently,
  and for 0/1 scores of a mean or accuracy, the exact McNemar test agrees: the Clopper-Pearson
  lower bound of P(candidate better | discordant) is above 1/2 (a bootstrap of a handful of
  discordant examples is too optimistic; not with `gate = "point"`).

Every count and test is over the split's groups, not lines (exporter/eval_groups.py): copies
of one prompt, one prompt answered twice and the turns of a session are one piece of
evidence, so 18 copies of 3 questions are 3 decided pairs, not 18 (r14g #1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # light to import: the CLI reads the defaults before any evaluation
    from exporter.eval_report import EvalReport

MIN_DECIDED = 10
MIN_DISCORDANT = 10
MAX_ERROR_SHARE = 0.1
MIN_CONFIDENCE = 0.8
"""The lowest confidence a promotion gate accepts: the gate wants the lower bound of a
two-sided interval, so a candidate no better than the current model passes up to (1 -
confidence) / 2 of the time: 10% at 0.8, 24.5% at 0.51 (a coin flip weighted a little)."""


def confidence_problem(confidence: float) -> str | None:
    """Why a gate's confidence is too low (below MIN_CONFIDENCE), or None."""
    if confidence >= MIN_CONFIDENCE:
        return None
    return (f"{confidence:g} is too low for a gate: a candidate no better than the current "
            f"model would pass up to {(1 - confidence) / 2:.1%} of the time; use at least "
            f"{MIN_CONFIDENCE:g}")


MOST_ERROR_SHARE = 0.5
"""The largest max_error_share a promotion gate accepts: past half the examples failed, the
few that decide say nothing about the rest."""
RATE_SCORERS = frozenset({"exact", "exact_strict", "classification", "judge"})


def margin_problem(margin: float, scorer: str) -> str | None:
    """Why `margin` can never be met by `scorer`'s margin, or None. The built-in scorers'
    margins are differences of rates in [-1, 1] (the judge's: 2 × win rate − 1), and the gate
    wants the lower bound above 0: a margin of 1 or more never passes (a silent
    `not_promoted` forever). A user function's scores have no known range."""
    if margin != margin or margin < 0:
        return f"margin must be a number of at least 0, got {margin}"
    if scorer in RATE_SCORERS and margin >= 1:
        return (f"margin {margin:g} can never be met: the {scorer} scorer's margin is a "
                "difference of rates, between -1 and 1, so the candidate could never pass; "
                "it is in the metric's units (0.02: two points better)")
    return None


@dataclass(frozen=True)
class GateRules:
    margin: float = 0.0
    gate: str = "lower_bound"  # lower_bound | point
    min_decided: int = MIN_DECIDED
    min_discordant: int = MIN_DISCORDANT
    max_error_share: float = MAX_ERROR_SHARE


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    decided_on: float | None  # the number compared with the margin
    reasons: list[str] = field(default_factory=list)  # why not (empty when passed)

    def render(self, rules: GateRules) -> str:
        head = f"gate ({rules.gate}, margin {rules.margin:g}): "
        return head + ("passed" if self.passed else "not passed: " + "; ".join(self.reasons))


def gate_decision(report: EvalReport, rules: GateRules) -> GateDecision:
    decided_on = report.margin if rules.gate == "point" else report.margin_lower
    reasons = []
    what = "margin" if rules.gate == "point" else "the margin's lower confidence bound"
    if decided_on is None or decided_on != decided_on:
        reasons.append("no margin interval (no examples, or fewer than two independent "
                       "groups)")
    elif decided_on <= 0 or decided_on < rules.margin:
        reasons.append(f"{what} {decided_on:+.4f} is not above 0 and at least "
                       f"{rules.margin:g}")
    if report.pairwise is not None and rules.gate != "point" and rules.margin > 0:
        reasons.extend(_exact_margin_problem(report, rules.margin))
    if report.pairwise is not None:
        p = report.pairwise
        share = p.get("error_share", 0.0)
        if share > rules.max_error_share:
            reasons.append(f"{p.get('failed', p['errors'])} of "
                           f"{p.get('pairs', report.examples)} pairs are errors or failed "
                           f"judgements ({share:.1%} > max_error_share "
                           f"{rules.max_error_share:.1%})")
        decided = p.get("decided_groups", p["decided"])
        if decided < rules.min_decided:
            copies = _in_groups(decided, p["decided"], "pairs")
            reasons.append(f"only {decided} decided pairs (wins + losses){copies}, fewer "
                           f"than min_decided {rules.min_decided}")
    if report.paired is not None:
        q = report.paired
        if q["error_share"] > rules.max_error_share:
            reasons.append(f"{q['failed']} of {report.examples} examples have a failed request "
                           f"({q['error_share']:.1%} > max_error_share "
                           f"{rules.max_error_share:.1%})")
        discordant = q.get("discordant_groups", q["discordant"])
        if discordant < rules.min_discordant:
            copies = _in_groups(discordant, q["discordant"], "examples")
            reasons.append(f"only {discordant} discordant examples (scored differently)"
                           f"{copies}, fewer than min_discordant {rules.min_discordant}")
        if rules.gate != "point" and q.get("interval") is not None and q["interval"][0] <= 0.5:
            better, worse = (q.get("groups_better", q["candidate_better"]),
                             q.get("groups_worse", q["baseline_better"]))
            reasons.append(f"the exact McNemar test does not favour the candidate "
                           f"({better} better, {worse} worse, p = {q['p_value']:.4g})")
    return GateDecision(not reasons, decided_on, reasons)


def _exact_margin_problem(report: EvalReport, margin: float) -> list[str]:
    """Why the exact test (with the decided share's uncertainty, exporter/margin_test.py)
    does not put the judge's margin above `margin` at the report's confidence, if it does not."""
    from exporter.margin_test import margin_p_value  # numpy: only when a judge is gated

    assert report.pairwise is not None
    groups = report.pairwise.get("groups") or {}
    if not {"wins", "losses", "ties"} <= groups.keys():
        return ["the judge's counts in groups are missing (an evaluation from an older "
                "version): evaluate again to gate on a margin above 0"]
    p_value = margin_p_value(groups["wins"], groups["losses"], groups["ties"], margin)
    if p_value <= (1 - report.confidence) / 2:
        return []
    return [f"the exact test that also takes the share of decided pairs as uncertain does "
            f"not put the margin above {margin:g} ({groups['wins']} wins, {groups['losses']} "
            f"losses, {groups['ties']} ties in groups; one-sided p = {p_value:.4g} > "
            f"{(1 - report.confidence) / 2:.4g})"]


def _in_groups(groups: int, lines: int, unit: str) -> str:
    """How a count of groups differs from the lines behind it, for a gate's reason."""
    return "" if groups == lines else (
        f" counted in independent groups (copies of one prompt or a session count once; "
        f"{lines} {unit})")
