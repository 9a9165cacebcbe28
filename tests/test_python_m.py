"""`python -m tuneloop` runs the CLI (r12 found it missing: no __main__)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_python_m_tuneloop_shows_the_cli_help() -> None:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "tuneloop", "--help"], cwd=root,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "Usage: tuneloop" in done.stdout and "serve" in done.stdout
