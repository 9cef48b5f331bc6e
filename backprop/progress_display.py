"""How the command line shows a job's events: a live rich progress bar on a terminal, plain lines otherwise.

Both show the same things: epoch n/N, percent, train and validation loss and accuracy, samples/s and the
server's ETA; status changes (stalled, re-queued after a lost worker, finished) as lines of their own. The
outcome (`end_line`) is the caller's to print.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Protocol, TextIO

from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.text import Text

from backprop.client import Event


class Display(Protocol):
    """Shows the events of one job while it is followed."""

    def __enter__(self) -> Display: ...

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None: ...

    def show(self, event: Event) -> None: ...


def display_for(stream: TextIO, job_id: str) -> Display:
    """A live bar when `stream` is a terminal, plain lines (at most one a second) otherwise."""
    if stream.isatty():
        return LiveProgress(Console(file=stream), job_id)
    return PlainProgress(stream, job_id)


def status_line(data: dict[str, Any]) -> str:
    """A status event as a line: the status, the attempt, and what a stall or a re-queue means."""
    status = str(data.get("status"))
    attempt = int(data.get("attempt") or 0)
    line = f"status: {status}" + (f" (attempt {attempt})" if attempt else "")
    if status == "stalled":
        line += ": its worker stopped reporting; it will be re-queued"
    elif status == "queued" and attempt > 1:
        line += ": re-queued after its worker was lost"
    return line


def end_line(job: dict[str, Any]) -> str:
    """The final record as a line: the model on success, the reason otherwise."""
    status = str(job.get("status"))
    if status == "succeeded":
        return f"job {job.get('id')} succeeded: model {job.get('model_id')}"
    reason = job.get("error")
    return f"job {job.get('id')} {status}" + (f": {reason}" if reason else "")


def metrics_text(progress: dict[str, Any]) -> str:
    """Train and validation loss and accuracy of an epoch (what is known of them)."""
    parts = []
    for prefix, label in (("train", ""), ("validation", "val ")):
        loss, accuracy = progress.get(f"{prefix}_loss"), progress.get(f"{prefix}_accuracy")
        if loss is not None:
            parts.append(f"{label}loss {loss:.4f}")
        if accuracy is not None:
            parts.append(f"{label}acc {accuracy:.3f}")
    return "  ".join(parts)


def speed_text(progress: dict[str, Any]) -> str:
    speed = progress.get("samples_per_second")
    return "" if speed is None else f"{speed:,.0f} samples/s"


def eta_text(progress: dict[str, Any]) -> str:
    eta = progress.get("eta_seconds")
    if eta is None:
        return "ETA -:--:--"
    minutes, seconds = divmod(round(float(eta)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"ETA {hours}:{minutes:02d}:{seconds:02d}"


def epoch_text(progress: dict[str, Any]) -> str:
    epoch, epochs = int(progress["epoch"]), progress.get("epochs")
    if not epochs:
        return f"epoch {epoch}"
    return f"epoch {epoch}/{epochs} ({100 * epoch // int(epochs)}%)"


class _TwoLineProgress(Progress):
    """A progress bar with the epoch's metrics on a line below it (a single line is too wide for 80 columns)."""

    metrics = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        table = self.make_tasks_table(self.tasks)
        yield Group(table, Text(f"  {self.metrics}")) if self.metrics else table


class LiveProgress:
    """The rich bar: `epoch n/N ━━━━ 42% 12,345 samples/s ETA 0:00:07`, the metrics below it, status lines
    printed above it."""

    def __init__(self, console: Console, job_id: str) -> None:
        self.job_id = job_id
        self.progress = _TwoLineProgress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(bar_width=30),
            TaskProgressColumn(),
            TextColumn("{task.fields[speed]}"),
            TextColumn("{task.fields[eta]}"),
            console=console,
            refresh_per_second=8,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.progress.stop()

    def show(self, event: Event) -> None:
        if event.event == "status":
            self.progress.console.print(status_line(event.data), highlight=False)
        elif event.event == "progress":
            self._epoch(event.data)
        elif event.event == "end":
            if event.data.get("status") == "succeeded" and self.task is not None:
                total = self.progress.tasks[0].total or 0
                self.progress.update(self.task, completed=total, eta=eta_text({"eta_seconds": 0}))
            self.progress.refresh()

    def _epoch(self, progress: dict[str, Any]) -> None:
        epoch, epochs = int(progress["epoch"]), progress.get("epochs")
        fields: dict[str, Any] = {
            "epoch": epoch,
            "epochs": epochs or "?",
            "speed": speed_text(progress),
            "eta": eta_text(progress),
        }
        self.progress.metrics = metrics_text(progress)
        if self.task is None:
            self.task = self.progress.add_task(self.job_id, total=epochs or None, **fields)
        self.progress.update(self.task, completed=epoch, refresh=True, **fields)  # every epoch is drawn


class PlainProgress:
    """One line per status change, and the latest epoch at most once every `interval` seconds."""

    def __init__(
        self, stream: TextIO, job_id: str, *, interval: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream = stream
        self.job_id = job_id
        self.interval = interval
        self.clock = clock
        self.last_line: float | None = None

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stream.flush()

    def show(self, event: Event) -> None:
        if event.event == "status":
            self._write(f"job {self.job_id}: {status_line(event.data)}")
        elif event.event == "progress":
            now = self.clock()
            if self.last_line is None or now - self.last_line >= self.interval:
                self.last_line = now
                self._write(epoch_line(self.job_id, event.data))

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


def epoch_line(job_id: str, progress: dict[str, Any]) -> str:
    """An epoch as one plain line."""
    parts = [epoch_text(progress), metrics_text(progress), speed_text(progress), eta_text(progress)]
    return f"job {job_id}: " + "  ".join(part for part in parts if part)
