"""Jobs: the fine-tuning jobs tuneloop recorded, a job's events and its loss curves as charts
(what `tuneloop finetune` / `tuneloop jobs follow` recorded; the app never calls the
provider)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from curation_ui.chat_view import escape_markdown
from curation_ui.session import client, require_reviewer
from tuneloop.errors import TuneloopError

require_reviewer()


def curves_frame(curves: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame({"step": curves["steps"], "training loss": curves["train_loss"],
                          "validation loss": curves["valid_loss"]})
    return frame.set_index("step").dropna(axis="columns", how="all")


st.title("Jobs")
if st.button("Refresh", icon=":material/refresh:"):
    st.rerun()
try:
    jobs = client().jobs(limit=200)["jobs"]
except TuneloopError as exc:
    st.error(escape_markdown(f"The admin API did not answer: {exc.message}"))
    st.stop()
if not jobs:
    st.info("No fine-tuning job has been recorded yet: start one with `tuneloop finetune`.")
    st.stop()
st.dataframe(pd.DataFrame([{
    "id": j["id"], "status": j["status"], "base model": j["base_model"],
    "fine-tuned model": j["fine_tuned_model"], "method": j["method"],
    "dataset": j["dataset_id"], "created": j["created_at"], "finished": j["finished_at"],
} for j in jobs]), hide_index=True)

job_id = st.selectbox("Job", [j["id"] for j in jobs], key="jobs_selected")
job = next(j for j in jobs if j["id"] == job_id)
status, model, finished = st.columns(3)
status.metric("status", job["status"])
model.text(f"model: {job['fine_tuned_model'] or '-'}")
finished.text(f"finished: {job['finished_at'] or '-'}")
if job.get("error"):
    st.error(escape_markdown(str(job["error"].get("message") or job["error"])))

st.subheader("Loss curves")
curves = job.get("curves")
if curves and curves.get("steps"):
    st.line_chart(curves_frame(curves))
else:
    st.caption("No metrics recorded yet (they are stored when the job succeeds: "
               "`tuneloop jobs results JOB`).")

st.subheader("Events")
events = client().job_events(job_id)["events"]
if events:
    st.dataframe(pd.DataFrame([{"time": e["created_at"], "level": e["level"],
                                "message": e["message"]} for e in events]), hide_index=True)
else:
    st.caption("No events recorded yet (`tuneloop jobs follow JOB` records them).")
