"""A terminal display for :func:`exporter.providers.follow.follow`: the job's events as they
come, a progress bar over its training steps, and a note when the connection drops."""

from __future__ import annotations

from datetime import UTC, datetime
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from exporter.providers.base import JobEvent, JobInfo

_STYLE = {"error": "bold red", "warn": "yellow", "warning": "yellow"}


class RichFollowDisplay:
    """Use as a context manager around `follow(..., observer=display)`."""

    def __init__(self, job_id: str, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task(job_id, total=None, loss="")

    def __enter__(self) -> RichFollowDisplay:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def event(self, event: JobEvent) -> None:
        stamp = datetime.fromtimestamp(event.created_at, UTC).strftime("%H:%M:%S")
        line = Text(f"{stamp} ", style="dim")
        line.append(event.message, style=_STYLE.get(event.level, ""))  # plain text, no markup
        self.progress.console.print(line)
        step, total = event.data.get("step"), event.data.get("total_steps")
        if isinstance(step, int):
            loss = event.data.get("train_loss")
            shown = f"loss {loss:.3f}" if isinstance(loss, (int, float)) else ""
            self.progress.update(self.task, completed=step, total=total or None, loss=shown)

    def status(self, job: JobInfo) -> None:
        self.progress.update(self.task, description=f"{job.id} {job.status}")
        if job.status == "succeeded" and job.fine_tuned_model:
            self.progress.update(self.task, completed=self.progress.tasks[0].total or 1)

    def connection_lost(self, error: Exception, retry_in: float) -> None:
        cause = type(error.__cause__ or error).__name__
        note = f"connection to the provider lost ({cause}); retrying in {retry_in:.0f} s"
        self.progress.console.print(Text(note, style="yellow"))
