"""Schedules of a value over training progress (epsilon, learning rate, PER's beta)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LinearSchedule:
    """Goes linearly from `start` to `end` over `duration` steps, then stays at `end`."""

    start: float
    end: float
    duration: int

    def __call__(self, step: int) -> float:
        if self.duration <= 0 or step >= self.duration:
            return self.end
        return self.start + (self.end - self.start) * (step / self.duration)


@dataclass(frozen=True)
class ExponentialSchedule:
    """Decays from `start` towards `end` by a factor `decay` per step: end + (start - end)·decay^step."""

    start: float
    end: float
    decay: float

    def __call__(self, step: int) -> float:
        return self.end + (self.start - self.end) * math.pow(self.decay, step)
