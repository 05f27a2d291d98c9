"""One time budget, created once and handed down: the attempt's ``Deadline``.

A scene attempt (connect the websocket, ``POST /prompt`` with its retries and look-ups, wait for
completion) has one budget, ``max_wait_seconds`` from its start. Creating the deadline once and
passing the object keeps every step on the same clock; a step that must also respect its own cap
takes :meth:`Deadline.sub`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ._errors import InvalidInputError

__all__ = ["MIN_REQUEST_TIMEOUT_S", "Deadline"]

MIN_REQUEST_TIMEOUT_S = 0.05
"""A request at the very end of a budget still gets this long (a zero timeout would never be tried)."""


class Deadline:
    """A point on a monotonic clock; ``left()`` is what remains of the budget, never negative."""

    __slots__ = ("at", "clock")

    def __init__(self, at: float, clock: Callable[[], float] = time.monotonic) -> None:
        if math.isnan(at):
            raise InvalidInputError("a deadline cannot be NaN")
        self.at = at
        self.clock = clock

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Deadline:
        """The deadline *seconds* from now on *clock*."""
        return cls(clock() + seconds, clock)

    def left(self) -> float:
        """Seconds until the deadline; 0.0 once it passed."""
        return max(0.0, self.at - self.clock())

    def expired(self) -> bool:
        return self.clock() >= self.at

    def sub(self, limit: float) -> Deadline:
        """A deadline at most *limit* seconds from now and never later than this one."""
        return Deadline(min(self.at, self.clock() + limit), self.clock)

    def request_timeout(self, floor: float = MIN_REQUEST_TIMEOUT_S) -> float:
        """The timeout of one request made now: the time left, but at least *floor*."""
        return max(floor, self.at - self.clock())

    def __repr__(self) -> str:
        return f"Deadline(left={self.left():.3f}s)"
