"""wait_for_completion: every fault path ends within its budget with the right exit reason."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_comfy import FakeComfy, Scenario, fake_servers, load_transcript
from scene_telemetry.comfy_api.client import ComfyClient, EventStream
from scene_telemetry.comfy_api.completion import (
    CompletionResult,
    classify_history_entry,
    locate_prompt,
    trim_error,
    wait_for_completion,
)
from scene_telemetry.runner.policy import QueuePolicy
from scene_telemetry.telemetry._meta import parse_iso

PROMPT = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 2, "color": 1}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "rec/success"}},
}
# Budgets small enough to keep every test well under a second, large enough for a loaded 2-core box.
FAST = QueuePolicy(
    max_wait_seconds=5.0, history_poll_interval_seconds=0.1, max_attempt_count=0, post_execution_timeout_seconds=2.0
)
SLACK_S = 0.5  # scheduling slack allowed beyond a budget


@pytest.fixture
def fake_comfy() -> Iterator[Callable[..., FakeComfy]]:
    """Factory of stand-ins with scripted scenarios, stopped on teardown."""
    with fake_servers() as start:
        yield start


def run_prompt(
    fake: FakeComfy,
    policy: QueuePolicy = FAST,
    *,
    use_events: bool = True,
    prompt_id: str = "pid",
    **kwargs: Any,
) -> tuple[CompletionResult, float, EventStream | None]:
    """Connect (optionally), submit, wait; return the result, the seconds waited and the stream."""
    client = ComfyClient(fake.url, request_timeout_s=2.0)
    events = EventStream(fake.url, client.client_id) if use_events else None
    if events is not None:
        events.connect()
    try:
        client.submit(PROMPT, prompt_id=prompt_id)
        started = time.monotonic()
        result = wait_for_completion(client, prompt_id, policy, events=events, **kwargs)
        return result, time.monotonic() - started, events
    finally:
        if events is not None:
            events.close()


def test_success_is_known_from_the_websocket_and_confirmed_by_history(fake_comfy: Callable[..., FakeComfy]) -> None:
    seen: list[str] = []
    slow = QueuePolicy(history_poll_interval_seconds=30.0)  # polling alone would take 30 s
    fake = fake_comfy(Scenario(run_seconds=0.2))  # still running when the wait starts
    result, waited, _ = run_prompt(fake, slow, on_event=lambda e: seen.append(e["type"]))
    assert result.exit_reason == "success" and result.succeeded
    assert waited < 1.0
    assert result.execution_success_detected and result.execution_success_at is not None
    assert result.execution_started_at is not None
    assert parse_iso(result.execution_success_at) >= parse_iso(result.execution_started_at)
    assert result.history_entry is not None and result.history_entry["outputs"]["2"]["images"]
    assert 1 <= result.history_attempts <= 3
    assert result.error is None and result.detail is None
    assert not result.lost and not result.post_execution_timeout_reached
    assert "execution_success" in seen and "executed" in seen


def test_late_history_is_retried_within_the_post_execution_window(fake_comfy: Callable[..., FakeComfy]) -> None:
    slow = QueuePolicy(history_poll_interval_seconds=30.0, post_execution_timeout_seconds=3.0)
    result, waited, _ = run_prompt(fake_comfy(Scenario(history_delay_s=0.3)), slow)
    assert result.exit_reason == "success"
    assert 0.3 <= waited < 0.3 + SLACK_S
    assert result.history_attempts >= 3  # empty replies before the entry appeared


@pytest.mark.parametrize("scenario", [Scenario(history_never=True), Scenario(history_delay_s=3.0)])
def test_missing_history_after_success_is_post_execution(
    fake_comfy: Callable[..., FakeComfy], scenario: Scenario
) -> None:
    policy = QueuePolicy(history_poll_interval_seconds=30.0, post_execution_timeout_seconds=0.3)
    result, waited, _ = run_prompt(fake_comfy(scenario), policy)
    assert result.exit_reason == "postExecution"
    assert result.post_execution_timeout_reached and result.execution_success_detected
    assert result.history_entry is None
    assert 0.3 <= waited < 0.3 + SLACK_S
    assert "execution_success seen" in (result.detail or "")


def test_dropped_websocket_falls_back_to_history_polling(fake_comfy: Callable[..., FakeComfy]) -> None:
    # The socket closes mid-run and reconnects are refused until after the run ended:
    # the final events are lost for good, only /history/{id} can tell.
    fake = fake_comfy(Scenario(drop_ws_after=4, ws_refuse_s=0.6, run_seconds=0.2))
    result, waited, events = run_prompt(fake)
    assert result.exit_reason == "success"
    assert result.execution_success_detected  # from the history status messages
    assert events is not None and events.drops == 1
    assert waited < 0.2 + FAST.history_poll_interval_seconds + SLACK_S
    polls = [p for m, p in fake.requests if p == "/history/pid"]
    assert len(polls) == result.history_attempts >= 2


def test_reconnect_checks_the_prompt_is_still_queued(fake_comfy: Callable[..., FakeComfy]) -> None:
    fake = fake_comfy(Scenario(drop_ws_after=3, run_seconds=0.3))
    result, _, _ = run_prompt(fake)
    assert result.exit_reason == "success" and result.ws_reconnects == 1
    assert ("GET", "/queue") in fake.requests


def test_without_events_the_history_is_polled_at_the_policy_interval(fake_comfy: Callable[..., FakeComfy]) -> None:
    fake = fake_comfy(Scenario(run_seconds=0.35))
    result, waited, _ = run_prompt(fake, use_events=False)
    assert result.exit_reason == "success"
    assert 0.35 <= waited < 0.35 + FAST.history_poll_interval_seconds + SLACK_S
    assert 4 <= result.history_attempts <= 7  # first poll at once, then every 0.1 s


def test_http_500_on_history_is_retried(fake_comfy: Callable[..., FakeComfy]) -> None:
    result, _, _ = run_prompt(fake_comfy(Scenario(history_500=3)), use_events=False)
    assert result.exit_reason == "success"
    assert result.history_attempts >= 4


def test_execution_error_reports_the_failing_node(fake_comfy: Callable[..., FakeComfy]) -> None:
    result, waited, _ = run_prompt(fake_comfy(Scenario(case="error")))
    assert result.exit_reason == "executionError" and waited < 1.0
    assert result.history_entry is not None and result.history_entry["status"]["status_str"] == "error"
    error = result.error
    assert error is not None
    assert (error["node_id"], error["node_type"], error["exception_type"]) == ("2", "SaveImage", "Exception")
    assert "current_inputs" not in error and len(error["traceback"]) <= 6
    assert result.detail is not None and "Saving image outside the output folder" in result.detail
    assert "node 2 (SaveImage)" in result.detail


def test_interrupt_is_reported(fake_comfy: Callable[..., FakeComfy]) -> None:
    fake = fake_comfy(Scenario(case="interrupted", run_seconds=10))
    client = ComfyClient(fake.url)

    def interrupt_when_running(event: dict[str, Any]) -> None:
        if event["type"] == "executing" and event["data"].get("node") == "2":
            client.interrupt("pid")

    result, waited, _ = run_prompt(fake, on_event=interrupt_when_running)
    assert result.exit_reason == "interrupted" and waited < 2.0
    assert result.error is not None and result.error["node_type"] == "SaveImage"
    assert result.detail == "interrupted at node 2 (SaveImage)"


def test_interrupt_without_history_still_ends_as_interrupted(fake_comfy: Callable[..., FakeComfy]) -> None:
    policy = QueuePolicy(history_poll_interval_seconds=30.0, post_execution_timeout_seconds=0.2)
    fake = fake_comfy(Scenario(case="interrupted", history_never=True))
    result, waited, _ = run_prompt(fake, policy)
    assert result.exit_reason == "interrupted" and result.post_execution_timeout_reached
    assert waited < 0.2 + SLACK_S


def test_max_wait_ends_a_run_that_never_finishes(fake_comfy: Callable[..., FakeComfy]) -> None:
    policy = QueuePolicy(max_wait_seconds=0.4, history_poll_interval_seconds=0.1)
    result, waited, _ = run_prompt(fake_comfy(Scenario(run_seconds=30)), policy)
    assert result.exit_reason == "maxWait" and not result.execution_success_detected
    assert 0.4 <= waited < 0.4 + SLACK_S


def test_attempt_limit_counts_empty_history_replies(fake_comfy: Callable[..., FakeComfy]) -> None:
    policy = QueuePolicy(history_poll_interval_seconds=0.05, max_attempt_count=3)
    result, waited, _ = run_prompt(fake_comfy(Scenario(run_seconds=30)), policy, use_events=False)
    assert result.exit_reason == "attemptLimit" and result.history_attempts == 3
    assert waited < 0.1 + SLACK_S


@pytest.mark.parametrize("restart_after", [2, 3])  # down right after execution_start, or one message later
def test_refused_connections_past_the_grace_period_are_server_lost(
    fake_comfy: Callable[..., FakeComfy], restart_after: int
) -> None:
    fake = fake_comfy(Scenario(restart_after=restart_after, down_s=None))
    result, waited, _ = run_prompt(fake, server_grace_s=0.4)
    assert result.exit_reason == "serverLost" and not result.lost
    assert 0.4 <= waited < 0.4 + SLACK_S
    assert result.detail is not None and result.detail.startswith("connection refused for")


def test_restart_that_loses_the_prompt_is_detected(fake_comfy: Callable[..., FakeComfy]) -> None:
    fake = fake_comfy(Scenario(restart_after=3, down_s=0.2))
    result, waited, _ = run_prompt(fake, server_grace_s=30.0)
    assert result.exit_reason == "serverLost" and result.lost
    assert waited < 0.2 + SLACK_S + 0.5  # found right after the restart, long before the grace period
    assert fake.restarts == 1
    assert "neither the queue nor the history" in (result.detail or "")


def test_restart_without_websocket_is_detected_by_polling(fake_comfy: Callable[..., FakeComfy]) -> None:
    fake = fake_comfy(Scenario(restart_after=3, down_s=0.2, run_seconds=0.1))
    result, _, _ = run_prompt(fake, use_events=False, server_grace_s=30.0)
    assert result.exit_reason == "serverLost" and result.lost


def test_a_silent_server_is_slow_not_lost() -> None:
    # Connections are accepted but never answered: every poll times out. That is not "refused",
    # so the wait runs to max wait instead of declaring the server lost after the grace period.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        client = ComfyClient(f"http://127.0.0.1:{listener.getsockname()[1]}", request_timeout_s=0.1)
        policy = QueuePolicy(max_wait_seconds=0.6, history_poll_interval_seconds=0.05)
        started = time.monotonic()
        result = wait_for_completion(client, "pid", policy, server_grace_s=0.1)
        waited = time.monotonic() - started
    assert result.exit_reason == "maxWait"
    assert 0.6 <= waited < 0.6 + SLACK_S


def test_a_finished_prompt_is_confirmed_on_the_first_poll(fake_comfy: Callable[..., FakeComfy]) -> None:
    fake = fake_comfy()
    run_prompt(fake)
    client = ComfyClient(fake.url)
    assert locate_prompt(client, "pid") == "history"
    assert locate_prompt(client, "other") == "absent"
    result = wait_for_completion(client, "pid", QueuePolicy())  # default 2 s interval: must not wait for it
    assert result.exit_reason == "success" and result.history_attempts == 1


def test_progress_events_reach_the_callback(fake_comfy: Callable[..., FakeComfy]) -> None:
    progress: list[tuple[int, int]] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["type"] == "progress":
            progress.append((event["data"]["value"], event["data"]["max"]))

    result, _, _ = run_prompt(fake_comfy(Scenario(progress_steps=3)), on_event=on_event)
    assert result.succeeded and progress == [(1, 3), (2, 3), (3, 3)]


def test_events_of_other_prompts_are_ignored(fake_comfy: Callable[..., FakeComfy]) -> None:
    fake = fake_comfy(Scenario(run_seconds=0.2))
    client = ComfyClient(fake.url)
    with EventStream(fake.url, client.client_id) as events:
        client.submit(PROMPT, prompt_id="first")
        client.submit(PROMPT, prompt_id="second")
        result = wait_for_completion(client, "second", FAST, events=events)
    assert result.succeeded
    assert result.history_entry is not None and result.history_entry["prompt"][1] == "second"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("success_frames", "success"),
        ("success_cached_rerun", "success"),
        ("success_webp", "success"),
        ("error_runtime", "executionError"),
        ("interrupted", "interrupted"),
    ],
)
def test_recorded_history_entries_are_classified(case: str, reason: str) -> None:
    recorded = load_transcript(case)
    entry = recorded["history"][recorded["prompt_reply"]["prompt_id"]]
    verdict = classify_history_entry(entry)
    assert verdict.reason == reason
    assert verdict.started_at is not None
    assert (verdict.success_at is not None) == (reason == "success")
    assert (verdict.error is not None) == (reason != "success")


def test_trim_error_keeps_the_identifying_fields() -> None:
    recorded = load_transcript("error_runtime")
    data = recorded["ws"][-1]["msg"]["data"]
    trimmed = trim_error({**data, "traceback": [f"frame {i}" for i in range(20)]})
    assert set(trimmed) == {
        "node_id",
        "node_type",
        "exception_type",
        "exception_message",
        "executed",
        "timestamp",
        "traceback",
    }
    assert trimmed["traceback"] == [f"frame {i}" for i in range(14, 20)]


@pytest.mark.parametrize(
    "status",
    [
        {"messages": 5, "status_str": "error", "completed": False},
        {"messages": [[["execution_error"], {}]], "status_str": "error", "completed": False},
        {"messages": [["execution_start", {"timestamp": 1e300}]], "status_str": "error", "completed": False},
        {"messages": [["execution_start", {"timestamp": float("nan")}]], "status_str": "error", "completed": False},
    ],
    ids=["messages-int", "name-list", "timestamp-huge", "timestamp-nan"],
)
def test_a_malformed_history_status_is_an_execution_error_not_a_crash(status: dict[str, Any]) -> None:
    """A broken server's status block: the parts that make no sense are ignored, the verdict still comes."""
    verdict = classify_history_entry({"status": status, "outputs": {}})
    assert verdict.reason == "executionError" and verdict.started_at is None


@pytest.mark.parametrize("stamp", [float("nan"), 1e300, True])
def test_a_websocket_event_with_no_real_timestamp_has_no_time_not_a_crash(stamp: Any) -> None:
    from scene_telemetry.comfy_api.completion import _Waiter

    policy = QueuePolicy(5.0, 0.05, 0, 0.5, 1)
    waiter = _Waiter(ComfyClient("http://127.0.0.1:9"), "p1", policy, None, None, time.monotonic, time.sleep, 1.0)
    waiter._on_event({"type": "execution_start", "data": {"prompt_id": "p1", "timestamp": stamp}})
    waiter._on_event({"type": "execution_success", "data": {"prompt_id": "p1", "timestamp": stamp}})
    assert waiter.started_at is None and waiter.success_at is None and waiter.success_seen


@pytest.mark.parametrize(
    "messages",
    [
        [["execution_start", {"timestamp": float("nan")}]],
        [["execution_start", {"timestamp": 1e300}]],
        [["execution_cached", {}, "extra"]],
        5,
    ],
    ids=["nan", "huge", "three-items", "not-a-list"],
)
def test_the_runners_start_time_of_a_malformed_history_entry_is_none_not_a_crash(messages: Any) -> None:
    from scene_telemetry.runner.documents import execution_started_at

    assert execution_started_at({"status": {"messages": messages}}) is None


def test_the_runners_start_time_is_the_execution_start_message() -> None:
    from scene_telemetry.runner.documents import execution_started_at

    entry = {"status": {"messages": [["execution_start", {"timestamp": 1767323045000}]]}}
    assert execution_started_at(entry) == "2026-01-02T03:04:05.000Z"
