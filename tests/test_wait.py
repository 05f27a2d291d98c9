"""wait_for_done: event-driven, polling fallback, only verified markers count."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from scene_telemetry.cli.main import main as cli_main
from scene_telemetry.telemetry import (
    DoneTimeoutError,
    MarkerError,
    SceneContext,
    atomic_write_text,
    wait_for_done,
    write_frames_with_marker,
)


def write_scene(output_dir: Path, prompt_id: str = "p1", prefix: str = "scene/frame") -> Path:
    images = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    result = write_frames_with_marker(images, output_dir, prefix, context=SceneContext(prompt_id=prompt_id))
    return result.marker_path


@pytest.fixture
def later() -> Iterator[Callable[[float, Callable[[], object]], None]]:
    """Run a callable on a thread after a delay; joined at teardown."""
    threads: list[threading.Thread] = []

    def schedule(delay: float, action: Callable[[], object]) -> None:
        thread = threading.Thread(target=lambda: (time.sleep(delay), action()))
        thread.start()
        threads.append(thread)

    yield schedule
    for thread in threads:
        thread.join()


def test_returns_existing_verified_marker(output_dir: Path) -> None:
    marker = write_scene(output_dir)
    assert wait_for_done(marker, 1)["PromptId"] == "p1"
    assert wait_for_done(marker.parent, 1)["FrameCount"] == 2


@pytest.mark.parametrize("use_events", [True, False])
def test_wakes_when_marker_appears(output_dir: Path, later, use_events: bool) -> None:
    (output_dir / "scene").mkdir()
    later(0.2, lambda: write_scene(output_dir))
    started = time.monotonic()
    body = wait_for_done(output_dir / "scene" / "frame.done", 10, poll_interval=0.05, use_events=use_events)
    assert body["FrameCount"] == 2
    assert time.monotonic() - started < 5


def test_event_path_is_faster_than_a_slow_poll(output_dir: Path, later) -> None:
    """With a 30 s poll interval only a file event can end the wait quickly."""
    (output_dir / "scene").mkdir()
    later(0.1, lambda: write_scene(output_dir))
    started = time.monotonic()
    wait_for_done(output_dir / "scene" / "frame.done", 20, poll_interval=30)
    assert time.monotonic() - started < 5


def test_folder_not_yet_created(output_dir: Path, later) -> None:
    later(0.1, lambda: write_scene(output_dir))
    body = wait_for_done(output_dir / "scene" / "frame.done", 10, poll_interval=0.05)
    assert body["FrameCount"] == 2


def test_timeout_is_clear(output_dir: Path) -> None:
    started = time.monotonic()
    with pytest.raises(DoneTimeoutError, match="no verified done marker after 0.3 s") as info:
        wait_for_done(output_dir / "frame.done", 0.3, poll_interval=0.05)
    assert 0.3 <= time.monotonic() - started < 3
    assert info.value.last_problem and "does not exist" in info.value.last_problem


def test_marker_with_missing_frame_does_not_count(output_dir: Path) -> None:
    marker = write_scene(output_dir)
    (marker.parent / "frame_00002_.png").unlink()
    with pytest.raises(DoneTimeoutError, match="frame_00002_.png: missing"):
        wait_for_done(marker, 0.2, poll_interval=0.05)


def test_marker_with_wrong_size_does_not_count(output_dir: Path) -> None:
    marker = write_scene(output_dir)
    with open(marker.parent / "frame_00001_.png", "ab") as handle:
        handle.write(b"extra")
    with pytest.raises(DoneTimeoutError, match="bytes on disk"):
        wait_for_done(marker, 0.2, poll_interval=0.05)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "not valid UTF-8 JSON"),
        (b"\xff\xfe\x00", "not valid UTF-8 JSON"),
        (json.dumps({"SchemaVersion": "scene-telemetry/1"}).encode(), "violates contract"),
        (b"[" * 100_000, "nested too deeply"),  # was a RecursionError escaping wait_for_done
        (b'{"PromptId": "a", "PromptId": "b"}', "duplicate key 'PromptId'"),
    ],
)
def test_malformed_marker_reported(output_dir: Path, content: bytes, problem: str) -> None:
    marker = output_dir / "frame.done"
    marker.write_bytes(content)
    with pytest.raises(DoneTimeoutError, match=problem):
        wait_for_done(marker, 0.2, poll_interval=0.05)


def test_prompt_filter_waits_for_the_right_run(output_dir: Path, later) -> None:
    write_scene(output_dir, prompt_id="old")
    later(0.2, lambda: write_scene(output_dir, prompt_id="new"))
    body = wait_for_done(output_dir / "scene" / "frame.done", 10, prompt_id="new", poll_interval=0.05)
    assert body["PromptId"] == "new"


def test_folder_with_two_markers_is_ambiguous(output_dir: Path) -> None:
    write_scene(output_dir, prefix="scene/a")
    write_scene(output_dir, prefix="scene/b")
    with pytest.raises(MarkerError, match="several markers"):
        wait_for_done(output_dir / "scene", 0.1)


def test_wait_command_exit_codes(output_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = write_scene(output_dir)
    assert cli_main(["wait", str(marker), "--timeout", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["PromptId"] == "p1"
    assert cli_main(["wait", str(output_dir / "nothing.done"), "--timeout", "0.1"]) == 3
    assert "no verified done marker" in capsys.readouterr().err


def test_torn_write_is_impossible_to_observe(output_dir: Path) -> None:
    """A marker rewritten in place while waiting: only complete versions are ever returned."""
    marker = write_scene(output_dir)
    body = json.loads(marker.read_text())
    for _ in range(20):
        atomic_write_text(marker, json.dumps(body))
        assert wait_for_done(marker, 1)["FrameCount"] == 2


@pytest.mark.parametrize(("timeout", "poll"), [(float("nan"), 0.5), (float("inf"), 0.5), (-1.0, 0.5), (1.0, 0.0)])
def test_unusable_budgets_are_refused_not_looped_on(output_dir: Path, timeout: float, poll: float) -> None:
    from scene_telemetry.telemetry import InvalidInputError

    with pytest.raises(InvalidInputError, match="finite"):
        wait_for_done(output_dir / "frame.done", timeout, poll_interval=poll)
