"""Earliest finish: when a slow server should leave the last scenes of a run to faster ones.

Pull-based scheduling alone ends badly on mixed GPUs: near the end a 1x server that frees up takes one of
the last scenes and finishes it long after a 4x server could have run it and three more. So a free slot
first asks whether the other servers, at their observed pace, would finish every scene still waiting
before this slot would finish one; if so it leaves them (and looks again when anything changes).
A server's pace is an exponential moving average of its successful scenes' seconds; a server without one
yet (the start of a run) never declines and is never counted on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

SMOOTHING = 0.3
"""Weight of the newest scene in the moving average (scenes of one run are alike; this follows drift)."""


@dataclass
class Pace:
    """A server's seconds per scene, as observed."""

    seconds: float | None = None

    def observe(self, elapsed: float) -> None:
        self.seconds = elapsed if self.seconds is None else (1 - SMOOTHING) * self.seconds + SMOOTHING * elapsed


@dataclass(frozen=True)
class Busy:
    """Another server as the decision sees it: its pace, when its scenes in flight started, its slot count."""

    seconds: float | None
    started: tuple[float, ...]
    slots: int


def others_can_absorb(waiting: int, my_finish: float, now: float, others: Iterable[Busy]) -> bool:
    """True when *others* would finish all *waiting* scenes by *my_finish* (so this slot should not take one)."""
    capacity = 0
    for other in others:
        if not other.seconds:
            continue
        free_at = [max(now, start + other.seconds) for start in other.started]
        free_at += [now] * max(0, other.slots - len(other.started))
        for free in free_at:
            if free + other.seconds <= my_finish:
                capacity += int((my_finish - free) // other.seconds)
        if capacity >= waiting:
            return True
    return False
