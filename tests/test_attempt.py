"""One attempt's budget and outcome: the Deadline object, the typed exit reasons, run_attempt on the fake server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fake_comfy import FakeComfy, Scenario
from scene_telemetry.comfy_api.client import ComfyClient
from scene_telemetry.runner.attempt import run_attempt, submit_prompt
from scene_telemetry.runner.policy import QueuePolicy
from scene_telemetry.telemetry import (
    EXIT_REASONS,
    Deadline,
    InvalidInputError,
    OutOfTimeError,
    PromptRejected,
    TelemetryError,
    load_schema,
)

FAST = QueuePolicy(
    max_wait_seconds=5.0,
    history_poll_interval_seconds=0.05,
    post_execution_timeout_seconds=1.0,
    scene_retry_budget=0,
)
PROMPT = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t/frame"}},
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_deadline_counts_down_and_never_goes_negative() -> None:
    clock = FakeClock()
    deadline = Deadline.after(10.0, clock)
    assert deadline.left() == 10.0 and not deadline.expired()
    clock.now += 4.0
    assert deadline.left() == 6.0
    clock.now += 7.0
    assert deadline.left() == 0.0 and deadline.expired()
    assert deadline.request_timeout(0.05) == 0.05  # a request at the end still gets its floor


def test_sub_deadline_is_capped_by_its_parent() -> None:
    clock = FakeClock()
    parent = Deadline.after(5.0, clock)
    assert parent.sub(2.0).left() == 2.0  # its own cap first
    assert parent.sub(60.0).left() == 5.0  # never past the parent
    clock.now += 4.0
    assert parent.sub(2.0).left() == 1.0


def test_deadline_refuses_nan() -> None:
    with pytest.raises(InvalidInputError):
        Deadline(float("nan"))


def test_exit_reasons_are_the_contract_enum() -> None:
    schema = load_schema("scene-telemetry")
    enum = [v for v in schema["properties"]["HistoryExitReason"]["enum"] if v is not None]
    assert sorted(EXIT_REASONS) == sorted(enum)


def test_out_of_time_is_part_of_the_one_exception_tree() -> None:
    assert issubclass(OutOfTimeError, TelemetryError)


def test_submit_with_an_expired_deadline_makes_no_request(output_dir: Path) -> None:
    clock = FakeClock()
    spent = Deadline(clock.now - 1.0, clock)
    with FakeComfy(Scenario(), output_dir=output_dir) as fake:
        client = ComfyClient(fake.url, request_timeout_s=2.0)
        with pytest.raises(OutOfTimeError, match="max_wait_seconds"):
            submit_prompt(client, PROMPT, "pid-1", spent, retry_pause_s=0.01, budget="max_wait_seconds (1 s)")
        assert fake.submissions == []


def test_run_attempt_returns_a_typed_success(output_dir: Path) -> None:
    with FakeComfy(Scenario(), output_dir=output_dir) as fake:
        client = ComfyClient(fake.url, request_timeout_s=2.0)
        events: list[str] = []
        result = run_attempt(
            client, PROMPT, "pid-ok", FAST, Deadline.after(5.0), notify=lambda e: events.append(e["event"])
        )
    assert result.exit_reason == "success" and result.completion is not None and result.rejection is None
    assert result.queued and result.prompt_id == "pid-ok" and "submitted" in events


def test_a_rejected_post_carries_the_server_error_object(output_dir: Path) -> None:
    with FakeComfy(Scenario(reject="bad_input"), output_dir=output_dir) as fake:
        client = ComfyClient(fake.url, request_timeout_s=2.0)
        result = run_attempt(client, PROMPT, "pid-bad", FAST, Deadline.after(5.0))
    assert result.exit_reason == "validationError" and result.completion is None
    assert isinstance(result.rejection, PromptRejected) and result.rejection.status == 400
    assert not result.queued and result.rejection_detail and result.rejection_detail.startswith("rejected: ")


def test_the_wait_ends_at_the_attempts_deadline_not_a_fresh_one(output_dir: Path) -> None:
    # A prompt that never finishes: the attempt ends when the deadline made before the POST runs out.
    with FakeComfy(Scenario(run_seconds=3.0), output_dir=output_dir) as fake:
        client = ComfyClient(fake.url, request_timeout_s=2.0)
        deadline = Deadline.after(0.6)
        started = time.monotonic()
        result = run_attempt(client, PROMPT, "pid-hang", FAST, deadline)
        elapsed = time.monotonic() - started
    assert result.exit_reason == "maxWait"
    assert elapsed < 0.6 + 0.5
