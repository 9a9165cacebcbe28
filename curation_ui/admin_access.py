"""The app's admin client, for admin-only actions (rollback), when one is configured.

The app holds the reviewer token by default (least privilege), so admin-only buttons are shown
disabled with the reason. Setting `TUNELOOP_UI_ADMIN_TOKEN` gives the app the admin token for
them; like the reviewer token it stays in the Streamlit server process.
"""

from __future__ import annotations

import streamlit as st

from curation_ui.session import ui_settings
from tuneloop.client import AdminClient

NO_ADMIN_TOKEN = ("This needs the admin token, and the app holds the reviewer token. Start the "
                  "app with TUNELOOP_UI_ADMIN_TOKEN set to the admin token to enable it, or use "
                  "the CLI (tuneloop rollback --alias ...).")


@st.cache_resource
def _admin_client(api: str, token: str, actor: str) -> AdminClient:
    return AdminClient(api, token, timeout_s=30.0, actor=actor)


def admin_client(actor: str) -> AdminClient | None:
    """The admin client acting as `actor` (recorded in the route history), or None."""
    settings = ui_settings()
    token = settings.ui_admin_token.get_secret_value() if settings.ui_admin_token else ""
    return _admin_client(settings.api, token, actor[:128]) if token else None
