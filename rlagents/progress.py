"""The training progress bar: steps, steps/s, recent return, last evaluation and ETA (rich)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainingProgress:
    """A rich progress bar, or nothing when disabled (`--no-progress`)."""

    def __init__(self, description: str, total: int, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[speed]} steps/s"), TextColumn("return {task.fields[ret]}"),
            TextColumn("eval {task.fields[eval]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(file=sys.stderr), refresh_per_second=4, transient=False)
        self.task = self.progress.add_task(description, total=total, speed="-", ret="-", eval="-")
        self.progress.start()

    def update(self, step: int, steps_per_s: float, recent_return: float | None, eval_return: float | None) -> None:
        if not self.enabled:
            return
        self.progress.update(self.task, completed=step, speed=f"{steps_per_s:,.0f}",
                             ret="-" if recent_return is None else f"{recent_return:.1f}",
                             eval="-" if eval_return is None else f"{eval_return:.1f}")

    def close(self) -> None:
        if self.enabled:
            self.progress.stop()
