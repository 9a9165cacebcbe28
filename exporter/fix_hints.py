"""What to do about each rule an export can stop on: the hint printed under the error.

An export that stops names the examples and the rule they break; this says how to fix them
(in the review app, or with an export option), or to leave them out with `--skip-invalid`.
Pure: text in, text out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

_EDIT = "edit the example in the review app (or reject it)"
FIXES: Mapping[str, str] = MappingProxyType({
    "separator_in_prompt": "the prompt contains the separator before its end: edit the prompt "
                           "in the review app, or choose another --separator",
    "stop_in_completion": "the answer contains the stop sequence before its end: edit the "
                          "answer in the review app, or choose another --stop",
    "empty_completion": f"the answer is empty: {_EDIT} to give it an answer",
    "missing_answer": f"the last message is not an assistant answer: {_EDIT}",
    "not_representable": "tool calls can't be written as prompt/completion: export it with "
                         "--format chat, or reject it",
    "missing_label": "tag it with its class (label:<class>, or the --filter label_field "
                     "metadata key), or reject it",
    "unknown_label": "fix its label tag, or add the label to --labels",
    "conflicting_labels": "it has several label tags: remove all but one in the review app",
    "not_serializable": f"a value can't be written as JSON (e.g. a lone surrogate): {_EDIT}",
})
_DEFAULT_FIX = f"{_EDIT} so that it follows the rule"
_UNSKIPPABLE = frozenset({"format_model_mismatch", "too_few_examples", "too_few_classes",
                          "positive_class_missing", "positive_class_unknown", "common_suffix",
                          "common_completion_suffix"})
SKIP_HINT = ("or pass --skip-invalid to leave the offending examples out (they are counted and "
             "listed in the report)")


def fix_for(rule: str) -> str:
    return FIXES.get(rule, _DEFAULT_FIX)


CYCLE_SKIP_HINT = ("or set `skip_invalid = true` under [dataset] in the cycle's config to leave "
                   "the offending examples out (they are counted and listed in the report)")


def how_to_fix(problems: Mapping[str, Sequence[str]], limit: int = 5,
               skip_hint: str = SKIP_HINT) -> str:
    """One line per rule that names examples: the rule, the first ids, what to do; then the
    way out `skip_hint` gives (--skip-invalid; the cycle's `[dataset] skip_invalid`). Empty
    when no rule names examples (nothing to skip)."""
    lines = []
    for rule in sorted(problems):
        ids = list(problems[rule])
        if not ids or rule in _UNSKIPPABLE:
            continue
        shown = ", ".join(ids[:limit]) + (" ..." if len(ids) > limit else "")
        lines.append(f"  {rule} ({shown}): {fix_for(rule)}")
    if not lines:
        return ""
    return "how to fix:\n" + "\n".join(lines) + "\n" + skip_hint
