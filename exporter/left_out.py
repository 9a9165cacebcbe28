"""Examples an export leaves out on purpose, listed as warnings in its report: legacy
`/v1/completions` rows of a chat-shaped export (unless --include-legacy) and, under
--skip-invalid, the examples that break a rule (with the rule)."""

from __future__ import annotations

from collections.abc import Mapping

from exporter.checks import CHECKS, Finding, Tally
from exporter.chunks import INVALID, LEGACY_COMPLETION
from exporter.report import ValidationReport


def _left_out_finding(reason: str, tally: Tally) -> Finding:
    if reason == LEGACY_COMPLETION:
        message = ("legacy /v1/completions interactions left out of this chat-shaped export "
                   "(their prompt is raw text, not a conversation); pass --include-legacy "
                   "(ExportOptions.include_legacy) to take them")
        return Finding("legacy_skipped", "warning", message, tally.count, tuple(tally.ids))
    rule = reason.removeprefix(INVALID)
    what = CHECKS.get(rule, ("error", rule.replace("_", " ")))[1]
    message = f"left out by --skip-invalid: {rule} ({what})"
    return Finding("invalid_skipped", "warning", message, tally.count, tuple(tally.ids))


def warn_left_out(report: ValidationReport, left_out: Mapping[str, Tally]) -> None:
    """Examples left out on purpose (legacy rows of a chat export, invalid ones under
    --skip-invalid) are listed as warnings, before the other warnings."""
    findings = [_left_out_finding(reason, left_out[reason]) for reason in sorted(left_out)]
    warnings = [i for i, f in enumerate(report.findings) if f.severity != "error"]
    at = warnings[0] if warnings else len(report.findings)
    report.findings[at:at] = findings
