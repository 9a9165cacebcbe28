"""The review pages' two columns: the conversation on the left, the answer editor and the
actions on the right, both starting under the item's header, so at 1440×900 the answer being
judged and its buttons are on screen without scrolling."""

from __future__ import annotations

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

CONVERSATION_SHARE = 0.5


def review_columns() -> tuple[DeltaGenerator, DeltaGenerator]:
    """(conversation, actions): use each with `with`."""
    conversation, actions = st.columns([CONVERSATION_SHARE, 1 - CONVERSATION_SHARE],
                                       gap="medium")
    return conversation, actions
