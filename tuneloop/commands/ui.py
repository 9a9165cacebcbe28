"""`tuneloop ui`: the reviewers' Streamlit app, run as its own process.

The settings go down to the Streamlit process as environment variables (TUNELOOP_API,
TUNELOOP_REVIEWER_TOKEN, TUNELOOP_UI_PASSWORD; `--config FILE` after `--`). The token is the
reviewer token when one is configured (least privilege), else the admin token; it stays in the
Streamlit server process and is never sent to browsers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from tuneloop.errors import ConfigError


def _oidc_configured() -> bool:
    for place in (Path.cwd() / ".streamlit" / "secrets.toml",
                  Path.home() / ".streamlit" / "secrets.toml"):
        if place.is_file() and "[auth" in place.read_text(errors="replace"):
            return True
    return False


@click.command("ui")
@click.option("--port", type=int, default=8501, show_default=True, help="Port of the app.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--api", default=None, help="Admin API base URL "
              "[env TUNELOOP_API; default http://127.0.0.1:4000].")
@click.pass_context
def ui(ctx: click.Context, port: int, host: str, api: str | None) -> None:
    """Run the review app (Queue, Browse, Item, Stats, Datasets, Jobs) against a server."""
    from tuneloop.commands.common import admin_token, domain_errors, settings_from

    @domain_errors
    def run() -> None:
        import curation_ui

        settings = settings_from(ctx)
        reviewer = settings.reviewer_token.get_secret_value() if settings.reviewer_token else ""
        token = reviewer or admin_token(settings)
        password = settings.ui_password.get_secret_value() if settings.ui_password else ""
        if not token:
            raise ConfigError("the app needs TUNELOOP_REVIEWER_TOKEN (or the admin token) to "
                              "talk to the server")
        if not password and not _oidc_configured():
            raise ConfigError("set TUNELOOP_UI_PASSWORD (reviewers sign in with their name and "
                              "it), or configure OIDC in .streamlit/secrets.toml ([auth])")
        package_dir = Path(curation_ui.__file__).resolve().parent
        env = {k: v for k, v in os.environ.items() if k != "TUNELOOP_ADMIN_TOKEN"}
        env.update({
            "TUNELOOP_API": (api or settings.api).rstrip("/"),
            "TUNELOOP_REVIEWER_TOKEN": token,
            # the app keeps its sign-in secret and exports beside the database
            "TUNELOOP_DB": (str(settings.db) if settings.db_is_postgres
                            else str(Path(settings.db).resolve())),
            "TUNELOOP_STATE_DIR": str(settings.state_dir.resolve()),
            # this checkout's packages first, whatever the working directory
            "PYTHONPATH": os.pathsep.join(filter(None, [str(package_dir.parent),
                                                        env.get("PYTHONPATH")])),
        })
        if password:
            env["TUNELOOP_UI_PASSWORD"] = password
        command = [
            sys.executable, "-m", "streamlit", "run", str(package_dir / "app.py"),
            "--server.port", str(port), "--server.address", host,
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer",
        ]
        config_file = ctx.obj.get("config_file")
        if config_file is not None:
            command += ["--", "--config", str(Path(config_file).resolve())]
        click.echo(f"tuneloop review app on http://{host}:{port} (admin API {env['TUNELOOP_API']})",
                   err=True)
        os.execve(sys.executable, command, env)

    run()
