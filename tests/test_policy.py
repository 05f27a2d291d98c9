"""Queue policy resolution: precedence, validation, the fast-iteration preset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from scene_telemetry.runner.policy import (
    FAST_ITERATION,
    KNOBS,
    QueuePolicy,
    add_policy_arguments,
    policy_from_args,
    resolve_policy,
)
from scene_telemetry.telemetry import InvalidInputError


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_policy_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_are_the_seed_values() -> None:
    policy = resolve_policy()
    assert policy == QueuePolicy(600.0, 2.0, 0, 30.0, 1)
    assert policy.poll_limit_text == "unbounded"


def test_flag_beats_env_beats_config_beats_default() -> None:
    config = {"max_wait_seconds": 100, "history_poll_interval_seconds": 3, "scene_retry_budget": 4}
    env = {"SCENE_MAX_WAIT_SECONDS": "200", "SCENE_HISTORY_POLL_INTERVAL_SECONDS": "1.5"}
    flags = {"max_wait_seconds": "300"}
    policy = resolve_policy(flags, env, config)
    assert policy.max_wait_seconds == 300.0  # flag
    assert policy.history_poll_interval_seconds == 1.5  # env over config
    assert policy.scene_retry_budget == 4  # config over default
    assert policy.post_execution_timeout_seconds == 30.0  # default


@pytest.mark.parametrize("knob", KNOBS, ids=lambda k: k.field)
def test_every_knob_reads_its_env_variable(knob) -> None:
    policy = resolve_policy(env={knob.env: "7"})
    assert getattr(policy, knob.field) == 7


@pytest.mark.parametrize(
    ("source", "raw", "needle"),
    [
        ("flag", "-1", "must be greater than 0"),
        ("flag", "abc", "is not a number"),
        ("env", "nan", "not a finite number"),
        ("env", "0", "must be greater than 0"),
        ("config", True, "expected a number"),
        ("config", "1e400", "not a finite number"),
    ],
)
def test_invalid_max_wait_is_a_clear_error_naming_the_source(source: str, raw: object, needle: str) -> None:
    layers: dict[str, dict[str, object]] = {"flag": {}, "env": {}, "config": {}}
    layers[source] = {"SCENE_MAX_WAIT_SECONDS" if source == "env" else "max_wait_seconds": raw}
    with pytest.raises(InvalidInputError) as info:
        resolve_policy(layers["flag"], layers["env"], layers["config"])  # type: ignore[arg-type]
    text = str(info.value)
    assert needle in text
    assert {"flag": "--max-wait-seconds", "env": "SCENE_MAX_WAIT_SECONDS", "config": "config file"}[source] in text
    assert info.value.field == "max_wait_seconds"


def test_counts_must_be_whole_and_may_be_zero() -> None:
    assert resolve_policy({"max_attempt_count": "0", "scene_retry_budget": "0"}).scene_retry_budget == 0
    with pytest.raises(InvalidInputError, match="whole number"):
        resolve_policy({"max_attempt_count": "2.5"})
    with pytest.raises(InvalidInputError, match="0 or more"):
        resolve_policy(env={"SCENE_RETRY_BUDGET": "-1"})


def test_overridden_env_value_is_still_validated() -> None:
    with pytest.raises(InvalidInputError, match="SCENE_HISTORY_MAX_ATTEMPTS"):
        resolve_policy({"max_attempt_count": "3"}, {"SCENE_HISTORY_MAX_ATTEMPTS": "many"})


def test_empty_env_variable_counts_as_unset() -> None:
    assert resolve_policy(env={"SCENE_MAX_WAIT_SECONDS": ""}).max_wait_seconds == 600.0


def test_unknown_config_key_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="max_wait"):
        resolve_policy(config={"max_wait": 5})


def test_fast_iteration_replaces_defaults_but_explicit_values_win() -> None:
    policy = resolve_policy(
        {"scene_retry_budget": "2"}, {"SCENE_POST_EXECUTION_TIMEOUT_SECONDS": "4"}, fast_iteration=True
    )
    assert policy.max_wait_seconds == FAST_ITERATION.max_wait_seconds
    assert policy.history_poll_interval_seconds == FAST_ITERATION.history_poll_interval_seconds
    assert policy.scene_retry_budget == 2
    assert policy.post_execution_timeout_seconds == 4.0


def test_fast_iteration_does_not_repeat_the_seed_bug() -> None:
    # The seed gave up after 30 s while CPU frames were still being written.
    assert FAST_ITERATION.max_wait_seconds >= 120
    assert FAST_ITERATION.history_poll_interval_seconds < QueuePolicy().history_poll_interval_seconds
    assert FAST_ITERATION.post_execution_timeout_seconds > 0


def test_policy_from_args_reads_flags_env_and_config_file(tmp_path: Path) -> None:
    config = tmp_path / "policy.yaml"
    config.write_text("queue_policy:\n  post_execution_timeout_seconds: 12\n  max_attempt_count: 9\n")
    args = _parse(["--max-wait-seconds", "45", "--policy-config", str(config)])
    policy = policy_from_args(args, env={"SCENE_HISTORY_MAX_ATTEMPTS": "5"})
    assert (policy.max_wait_seconds, policy.max_attempt_count, policy.post_execution_timeout_seconds) == (45.0, 5, 12.0)
    assert policy.poll_limit_text == "5"


def test_policy_json_round_trips_the_collector_keys() -> None:
    policy = QueuePolicy(max_attempt_count=3)
    assert json.loads(policy.to_json()) == {
        "max_wait_seconds": 600.0,
        "history_poll_interval_seconds": 2.0,
        "max_attempt_count": 3,
        "post_execution_timeout_seconds": 30.0,
        "scene_retry_budget": 1,
    }
