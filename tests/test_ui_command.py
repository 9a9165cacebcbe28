"""`tuneloop ui` refuses to start without what sign-in and the admin API need."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tuneloop.cli import main


@pytest.mark.parametrize("env, message", [
    ({"TUNELOOP_REVIEWER_TOKEN": "tlr-x"}, "TUNELOOP_UI_PASSWORD"),
    ({"TUNELOOP_REVIEWER_TOKEN": "tlr-x", "TUNELOOP_UI_PASSWORD": ""}, "TUNELOOP_UI_PASSWORD"),
    ({"TUNELOOP_UI_PASSWORD": "pw"}, "TUNELOOP_REVIEWER_TOKEN"),
])
def test_ui_needs_a_password_and_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         env: dict[str, str], message: str) -> None:
    monkeypatch.chdir(tmp_path)  # no .streamlit/secrets.toml here
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("TUNELOOP_ADMIN_TOKEN", "TUNELOOP_REVIEWER_TOKEN", "TUNELOOP_UI_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "x.duckdb"), "ui"], env=env)
    assert result.exit_code == 2, result.output
    assert message in result.output
