"""The training progress bar: steps, steps/s, recent return, last evaluation and ETA (rich)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn


def _bar(*middle: TextColumn) -> Progress:
    """Description, a short bar, the given columns, then the ETA, on stderr: fits 80 columns."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=12), *middle,
                    TextColumn("ETA"), TimeRemainingColumn(compact=True), console=Console(file=sys.stderr),
                    refresh_per_second=4)


class TrainingProgress:
    """A compact rich progress bar (fits 80 columns), or nothing when disabled (`--no-progress`).

    With a `sink`, updates go to `sink(step, steps_per_s, recent_return, eval_return)` instead of a bar: a
    comparison's worker processes send them to the one display of all runs.
    """

    def __init__(self, description: str, total: int, enabled: bool = True, sink=None):
        self.sink = sink
        self.enabled = enabled and sink is None
        if not self.enabled:
            return
        self.progress = _bar(TextColumn("{task.completed:,.0f}/{task.total:,.0f} {task.fields[speed]}/s"),
                             TextColumn("ret {task.fields[ret]} eval {task.fields[eval]}"))
        self.task = self.progress.add_task(description, total=total, speed="-", ret="-", eval="-")
        self.progress.start()

    def update(self, step: int, steps_per_s: float, recent_return: float | None, eval_return: float | None) -> None:
        if self.sink is not None:
            self.sink(step, steps_per_s, recent_return, eval_return)
        if not self.enabled:
            return
        self.progress.update(self.task, completed=step, speed=f"{steps_per_s:,.0f}",
                             ret="-" if recent_return is None else f"{recent_return:.1f}",
                             eval="-" if eval_return is None else f"{eval_return:.1f}")

    def close(self, step: int | None = None) -> None:
        if self.enabled:
            if step is not None:
                self.progress.update(self.task, completed=step)
            self.progress.stop()


class EpochProgress:
    """A rich progress bar over training epochs for supervised runs (the classifier), or nothing when disabled."""

    def __init__(self, description: str, total: int, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        self.progress = _bar(TextColumn("epoch {task.completed:.0f}/{task.total:.0f}"),
                             TextColumn("loss {task.fields[loss]} acc {task.fields[acc]} val {task.fields[val]}"))
        self.task = self.progress.add_task(description, total=total, loss="-", acc="-", val="-")
        self.progress.start()

    def update(self, epoch: int, loss: float, accuracy: float, val_accuracy: float) -> None:
        if self.enabled:
            self.progress.update(self.task, completed=epoch, loss=f"{loss:.3f}", acc=f"{accuracy:.3f}",
                                 val=f"{val_accuracy:.3f}")

    def close(self) -> None:
        if self.enabled:
            self.progress.stop()
