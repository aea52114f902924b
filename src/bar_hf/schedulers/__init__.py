"""Bit schedulers (diffusers `SchedulerMixin`): which bits of one AR token the head reveals at each head step."""

from .scheduling_bar import (
    BARAdaptiveBitScheduler,
    BARBitScheduler,
    BARBitSchedulerOutput,
    BARLogProbBitScheduler,
    BARSchedulerMixin,
)

__all__ = [
    "BARAdaptiveBitScheduler",
    "BARBitScheduler",
    "BARBitSchedulerOutput",
    "BARLogProbBitScheduler",
    "BARSchedulerMixin",
]
