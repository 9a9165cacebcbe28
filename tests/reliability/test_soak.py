"""A short soak through a real `tuneloop serve` while the upstream and storage fail: every
request gets a correct answer or an OpenAI-shaped proxy error, and nothing is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import run_soak

pytestmark = pytest.mark.reliability


def test_short_soak_with_faults_loses_nothing(tmp_path: Path) -> None:
    report = run_soak(clients=16, duration_s=8, fault_at_s=2, fault_seconds=3, workdir=tmp_path)
    report.print()
    assert report.sent > 200
    assert report.kinds.keys() >= {"ok", "ok-stream", "http-500", "http-429", "timeout",
                                   "reset", "cut-stream"}
    assert report.broken == 0, report.notes
    assert report.proxy_errors > 0 and report.correct > report.proxy_errors
    assert report.spool_peak_bytes > 0  # the fault really held interactions back
    assert report.missing == 0
    assert report.duplicates == 0
    assert report.logged == len(report.ids)
    assert report.spool_end_bytes == 0
