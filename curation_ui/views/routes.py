"""Routes: the alias map with canary shares, an alias's canary health, savings (charts) and
route history, a rollback button (admin token only), the frozen prompt templates, and the
latest evaluations and cycle runs.

A rollback the server refuses because the route was edited since the promotion (409
`route_edited`: rolling back would undo that edit) shows the server's message and offers
"Roll back anyway", which sends `force` (as `tuneloop rollback --force`) for the same
promotion and route version the refusal was about."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from curation_ui.admin_access import NO_ADMIN_TOKEN, admin_client
from curation_ui.chat_view import escape_markdown
from curation_ui.savings_view import show_savings
from curation_ui.session import client, require_reviewer, reviewer
from curation_ui.templates_view import frozen_templates
from tuneloop.errors import Conflict, TuneloopError
from tuneloop.request_transforms import describe

require_reviewer()


def shares(spec: dict[str, Any]) -> str:
    total = sum(float(t.get("weight", 100.0)) for t in spec["targets"]) or 1.0
    return ", ".join(f"{t['model']} {100 * float(t.get('weight', 100.0)) / total:g}%"
                     for t in spec["targets"])


def transforms(spec: dict[str, Any]) -> str:
    """What each target changes in the requests it gets (proxy/transforms.py)."""
    parts = [f"{t['model']}: {describe(t.get('transforms'))}"
             for t in [*spec["targets"], *spec.get("fallbacks", [])] if t.get("transforms")]
    if spec.get("prompt_suffix") or spec.get("stop") is not None:  # a route stored before
        parts.insert(0, "every target: legacy separator/stop")
    return "; ".join(parts)


def route_table(routes: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"alias": alias, "targets": shares(spec),
          "fallbacks": ", ".join(t["model"] for t in spec.get("fallbacks", [])),
          "transforms": transforms(spec)}
         for alias, spec in routes.items()],
        columns=["alias", "targets", "fallbacks", "transforms"])


def health_table(health: dict[str, Any]) -> pd.DataFrame:
    # not judged: 4xx that say nothing of the model (both models refused the request, or the
    # proxy did) and requests the client gave up on before any answer (storage/route_health.py)
    rows = [{"target": t["target"], "role": t.get("role"), "share %": t.get("share"),
             "requests": t["requests"], "error rate": round(t["error_rate"], 4),
             "not judged": t.get("unjudged_requests", 0),
             "feedback mean": t["feedback_mean"], "feedback count": t["feedback_count"],
             "latency p50 ms": t["latency_p50_ms"]} for t in health["targets"]]
    return pd.DataFrame(rows, columns=["target", "role", "share %", "requests", "error rate",
                                       "not judged", "feedback mean", "feedback count",
                                       "latency p50 ms"])


def history_table(history: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [{"seq": h["seq"], "changed at": h["changed_at"], "action": h["action"],
             "by": h["changed_by"], "route": shares(h["spec"]) if h["spec"] else "(deleted)",
             "detail": ", ".join(f"{k}={v}" for k, v in (h.get("detail") or {}).items())}
            for h in history]
    return pd.DataFrame(rows, columns=["seq", "changed at", "action", "by", "route", "detail"])


FLASH = "routes-flash"
FORCE_OFFER = "routes-force-offer"
"""A refused rollback that may be forced: (alias, model, seq, the server's message)."""


def roll_back(alias: str, model: str | None, seq: int | None, force: bool = False) -> None:
    """Roll back what the page showed (`model`, the route at history `seq`): refused when
    someone rolled it back or changed the route since the page was read. A refusal because
    the route was edited since the promotion is offered as "Roll back anyway" (`force`)."""
    st.session_state.pop(FORCE_OFFER, None)
    admin = admin_client(f"ui:{reviewer()}")
    assert admin is not None  # the button is disabled without it
    try:
        result = admin.rollback(alias, model=model, expect_seq=seq, force=force)
    except TuneloopError as exc:
        if isinstance(exc, Conflict) and exc.code == "route_edited" and not force:
            st.session_state[FORCE_OFFER] = (alias, model, seq, exc.message)
            return
        st.session_state[FLASH] = ("error", f"Rollback refused: {exc.message}")
        return
    st.session_state[FLASH] = ("success", f"Rolled back {result['model']}: {alias} now sends "
                                          f"{shares(result['spec'])}")


def force_offer(alias: str) -> None:
    """The server's refusal of the last rollback of `alias` (the route was edited since the
    promotion) and the explicit confirmation that rolls back anyway, undoing that edit."""
    offer = st.session_state.get(FORCE_OFFER)
    if offer is None or offer[0] != alias:
        return
    _, model, seq, message = offer
    st.error(escape_markdown(f"Rollback refused: {message}"))
    confirm, cancel = st.columns(2)
    confirm.button(f"Roll back {alias} anyway", type="primary", key="rollback-force",
                   on_click=roll_back, args=(alias, model, seq, True),
                   help="Restore the route from before the promotion, undoing the changes "
                        "made since (as `tuneloop rollback --force`).")
    cancel.button("Keep the route as it is", key="rollback-force-cancel",
                  on_click=lambda: st.session_state.pop(FORCE_OFFER, None))


def rollback_button(alias: str, health: dict[str, Any]) -> None:
    if admin_client(f"ui:{reviewer()}") is None:
        st.button(f"Roll back {alias}", disabled=True, help=NO_ADMIN_TOKEN, key="rollback")
        st.caption(escape_markdown(NO_ADMIN_TOKEN))
        return
    promotion = health.get("promotion") or {}
    model = promotion.get("model")
    st.button(f"Roll back {alias}", type="primary", key="rollback", on_click=roll_back,
              args=(alias, model, health.get("seq")),
              help=f"Undo the promotion of {model} shown below: restore the route from "
                   "before it." if model else "The alias has no promotion to roll back.")


st.title("Routes")
if FLASH in st.session_state:
    kind, message = st.session_state.pop(FLASH)
    (st.success if kind == "success" else st.error)(escape_markdown(message))
try:
    routes = client().routes()
except TuneloopError as exc:
    st.error(escape_markdown(f"The admin API did not answer: {exc.message}"))
    st.stop()
if not routes:
    st.info("No aliases yet: set routes with `tuneloop routes set FILE` or promote a model.")
    st.stop()
st.dataframe(route_table(routes), hide_index=True, width="stretch")

alias = st.selectbox("Alias", sorted(routes), key="routes-alias")
assert alias is not None
try:
    health = client().route_health(alias)
    history = client().route_history(alias)
    savings = client().savings(alias)
except TuneloopError as exc:
    st.error(escape_markdown(f"The admin API did not answer: {exc.message}"))
    st.stop()
rollback_button(alias, health)  # rolls back what the page shows, nothing older
force_offer(alias)
st.subheader("Canary health")
promotion = health.get("promotion")
if promotion:
    share = f"{promotion['canary']:g}%" if promotion.get("canary") is not None else "?"
    st.text(f"{promotion['model']} promoted ({share}) at {promotion['promoted_at']}")
st.caption(escape_markdown(f"Production traffic since {health['since']}: {shares(routes[alias])}"
                           if alias in routes else f"Production traffic since {health['since']}"))
st.dataframe(health_table(health), hide_index=True, width="stretch")
st.subheader("History")
st.dataframe(history_table(history), hide_index=True, width="stretch")
frozen_templates(client(), alias)
show_savings(savings)

left, right = st.columns(2)
with left:
    st.subheader("Evaluations")
    evals = client().eval_runs(limit=10)
    st.dataframe(pd.DataFrame(
        [{"id": e["id"], "status": e["status"], "candidate": e["candidate"],
          "baseline": e["baseline"], "margin": e["margin"], "at": e["created_at"]}
         for e in evals], columns=["id", "status", "candidate", "baseline", "margin", "at"]),
        hide_index=True)
with right:
    st.subheader("Cycle runs")
    runs = client().cycle_runs(limit=10)
    st.dataframe(pd.DataFrame(
        [{"id": r["id"], "cycle": r["cycle"], "status": r["status"], "step": r["step"],
          "outcome": r["outcome"], "updated": r["updated_at"]} for r in runs],
        columns=["id", "cycle", "status", "step", "outcome", "updated"]), hide_index=True)
