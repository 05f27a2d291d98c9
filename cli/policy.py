"""Queue policy: the seed's five knobs for waiting on a scene.

| knob | default | flag | environment |
|---|---|---|---|
| history max wait | 600 s | --max-wait-seconds | SCENE_MAX_WAIT_SECONDS |
| history poll interval | 2 s | --history-poll-interval-seconds | SCENE_HISTORY_POLL_INTERVAL_SECONDS |
| history max attempts | 0 = unbounded | --max-attempt-count | SCENE_HISTORY_MAX_ATTEMPTS |
| post-execution timeout | 30 s | --post-execution-timeout-seconds | SCENE_POST_EXECUTION_TIMEOUT_SECONDS |
| scene retry budget | 1 | --scene-retry-budget | SCENE_RETRY_BUDGET |
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueuePolicy:
    """How long and how often the runner waits for one scene."""

    max_wait_seconds: float = 600.0
    history_poll_interval_seconds: float = 2.0
    max_attempt_count: int = 0
    """History poll attempts per scene attempt; 0 = unbounded."""
    post_execution_timeout_seconds: float = 30.0
    scene_retry_budget: int = 1

    @property
    def poll_limit_text(self) -> str:
        """The contract's ``PollLimit``: 'unbounded' or the number as text."""
        return "unbounded" if self.max_attempt_count == 0 else str(self.max_attempt_count)
