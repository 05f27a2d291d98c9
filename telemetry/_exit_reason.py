"""Why the runner stopped waiting for a scene: the contract's ``HistoryExitReason`` values, typed.

One ``Literal`` used by the completion wait, the runner and the report; a test keeps it equal to the
``enum`` of ``HistoryExitReason`` in the bundled scene-telemetry schema.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["ABANDONED_REASONS", "EXIT_REASONS", "RETRYABLE_REASONS", "ExitReason"]

ExitReason = Literal[
    "success",
    "maxWait",
    "attemptLimit",
    "postExecution",
    "executionError",
    "interrupted",
    "serverLost",
    "validationError",
    "serverError",
]
EXIT_REASONS: tuple[ExitReason, ...] = get_args(ExitReason)

RETRYABLE_REASONS: frozenset[ExitReason] = frozenset({"executionError"})
"""Resubmitted while the retry budget lasts (``serverLost`` too, when the prompt was lost to a restart)."""
ABANDONED_REASONS: frozenset[ExitReason] = frozenset({"maxWait", "attemptLimit"})
"""The prompt may still be queued or running on the server: the runner stops it."""
