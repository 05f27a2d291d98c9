"""Queue policy: the seed's five knobs for waiting on a scene.

| knob | default | flag | environment |
|---|---|---|---|
| history max wait | 600 s | --max-wait-seconds | SCENE_MAX_WAIT_SECONDS |
| history poll interval | 2 s | --history-poll-interval-seconds | SCENE_HISTORY_POLL_INTERVAL_SECONDS |
| history max attempts | 0 = unbounded | --max-attempt-count | SCENE_HISTORY_MAX_ATTEMPTS |
| post-execution timeout | 30 s | --post-execution-timeout-seconds | SCENE_POST_EXECUTION_TIMEOUT_SECONDS |
| scene retry budget | 1 | --scene-retry-budget | SCENE_RETRY_BUDGET |

Precedence: flag > environment > config file > default. ``--fast-iteration``
swaps the default layer for :data:`FAST_ITERATION`; any flag, environment value or
config key given explicitly still wins over the preset.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..telemetry import InvalidInputError


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

    def as_dict(self) -> dict[str, float | int]:
        """The five knobs by field name (the collector's ``queue_policy`` JSON keys)."""
        return asdict(self)

    def to_json(self) -> str:
        """Compact JSON for SceneTelemetryCollector's ``queue_policy`` input."""
        return json.dumps(self.as_dict(), sort_keys=True)


FAST_ITERATION = QueuePolicy(
    # Completion comes from the websocket, so a long max wait costs nothing on success; it only bounds a hang.
    # 180 s covers short CPU graphs with a cold start (the seed's 30 s did not: frames were still being written).
    max_wait_seconds=180.0,
    # The poll is only the fallback when the websocket drops; 0.5 s notices completion quickly without load.
    history_poll_interval_seconds=0.5,
    # Bounded by the max wait rather than a count, so slow-but-alive servers are not cut off early.
    max_attempt_count=0,
    # The history entry follows execution_success within milliseconds; 10 s is generous yet fails fast.
    post_execution_timeout_seconds=10.0,
    # Quick feedback: report an execution error at once instead of re-running the scene.
    scene_retry_budget=0,
)
"""``--fast-iteration`` preset: quick feedback on short CPU graphs without cutting real work short."""


@dataclass(frozen=True)
class Knob:
    """One policy field and where it can be set."""

    field: str
    flag: str
    env: str
    integer: bool
    positive: bool
    """True: must be > 0 (the contract's exclusiveMinimum); False: >= 0."""
    help: str


KNOBS: tuple[Knob, ...] = (
    Knob(
        "max_wait_seconds",
        "--max-wait-seconds",
        "SCENE_MAX_WAIT_SECONDS",
        False,
        True,
        "history max wait per scene attempt (s, default 600)",
    ),
    Knob(
        "history_poll_interval_seconds",
        "--history-poll-interval-seconds",
        "SCENE_HISTORY_POLL_INTERVAL_SECONDS",
        False,
        True,
        "history poll interval (s, default 2)",
    ),
    Knob(
        "max_attempt_count",
        "--max-attempt-count",
        "SCENE_HISTORY_MAX_ATTEMPTS",
        True,
        False,
        "history poll attempts, 0 = unbounded (default 0)",
    ),
    Knob(
        "post_execution_timeout_seconds",
        "--post-execution-timeout-seconds",
        "SCENE_POST_EXECUTION_TIMEOUT_SECONDS",
        False,
        True,
        "wait for the history entry after execution_success (s, default 30)",
    ),
    Knob(
        "scene_retry_budget",
        "--scene-retry-budget",
        "SCENE_RETRY_BUDGET",
        True,
        False,
        "resubmissions per scene after an execution error or a lost prompt (default 1)",
    ),
)
KNOB_FIELDS = frozenset(k.field for k in KNOBS)


def parse_knob(knob: Knob, raw: Any, source: str) -> float | int:
    """Convert one raw value (text from a flag/env, or a config value) and range-check it."""
    label = f"{knob.field} from {source}"
    if isinstance(raw, bool):
        raise InvalidInputError(f"{label}: expected a number, got {raw!r}", field=knob.field)
    try:
        number = float(raw.strip()) if isinstance(raw, str) else float(raw)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{label}: {raw!r} is not a number", field=knob.field) from None
    if not math.isfinite(number):
        raise InvalidInputError(f"{label}: {raw!r} is not a finite number", field=knob.field)
    if number < 0 or (knob.positive and number == 0):
        bound = "greater than 0" if knob.positive else "0 or more"
        raise InvalidInputError(f"{label}: {raw!r} must be {bound}", field=knob.field)
    if knob.integer:
        if not number.is_integer():
            raise InvalidInputError(f"{label}: {raw!r} must be a whole number", field=knob.field)
        return int(number)
    return number


def resolve_policy(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
    *,
    fast_iteration: bool = False,
) -> QueuePolicy:
    """Merge the layers: *flags* > *env* > *config* > default (or the fast-iteration preset).

    *flags* and *config* are keyed by field name (``None`` values are ignored: an
    argparse default of ``None`` means "not given"); *env* by variable name.
    Every value given anywhere is validated, even one that a higher layer overrides,
    so a typo in the environment never hides until the day the flag is dropped.
    """
    unknown = sorted(set(config or {}) - KNOB_FIELDS)
    if unknown:
        raise InvalidInputError(
            f"unknown queue policy key(s) in config: {', '.join(unknown)}; known: {sorted(KNOB_FIELDS)}"
        )
    base = FAST_ITERATION if fast_iteration else QueuePolicy()
    values: dict[str, float | int] = {}
    for knob in KNOBS:
        chosen: float | int = getattr(base, knob.field)
        layers = (
            ("config file", (config or {}).get(knob.field)),
            (f"environment {knob.env}", (env or {}).get(knob.env)),
            (f"flag {knob.flag}", (flags or {}).get(knob.field)),
        )
        for source, raw in layers:  # lowest precedence first; later layers win
            if raw is not None and raw != "":  # an empty environment variable counts as unset
                chosen = parse_knob(knob, raw, source)
        values[knob.field] = chosen
    return QueuePolicy(**values)  # type: ignore[arg-type]


def load_policy_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the ``queue_policy`` section (or the whole mapping) of a JSON/YAML config file."""
    from .scenes import load_data_file

    data = load_data_file(path)
    if not isinstance(data, dict):
        raise InvalidInputError("policy config must be a mapping of knob names to values", path=str(path))
    section = data.get("queue_policy", data)
    if not isinstance(section, dict):
        raise InvalidInputError("'queue_policy' must be a mapping of knob names to values", path=str(path))
    return dict(section)


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the five knob flags, ``--fast-iteration`` and ``--policy-config`` to *parser*."""
    group = parser.add_argument_group("queue policy (flag > environment > config file > default)")
    for knob in KNOBS:
        # Kept as text: resolve_policy validates it with a message naming the flag.
        group.add_argument(knob.flag, dest=knob.field, metavar="N", default=None, help=f"{knob.help}; env {knob.env}")
    group.add_argument(
        "--fast-iteration", action="store_true", help=f"preset for short CPU graphs: {describe_policy(FAST_ITERATION)}"
    )
    group.add_argument(
        "--policy-config", metavar="FILE", help="JSON/YAML file with the knobs (or a 'queue_policy' section)"
    )


def policy_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> QueuePolicy:
    """Resolve the policy of a parsed command line (environment: *env* or ``os.environ``)."""
    config = load_policy_config(args.policy_config) if getattr(args, "policy_config", None) else None
    flags = {k.field: getattr(args, k.field, None) for k in KNOBS}
    return resolve_policy(
        flags, os.environ if env is None else env, config, fast_iteration=bool(getattr(args, "fast_iteration", False))
    )


def describe_policy(policy: QueuePolicy) -> str:
    """One line: ``max_wait_seconds=600, …`` (help text, logs)."""
    return ", ".join(f"{f.name}={getattr(policy, f.name):g}" for f in fields(policy))
