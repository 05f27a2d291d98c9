"""wait_for_done reacts only to file events that name the marker; the polling fallback covers the rest."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from scene_telemetry.telemetry import SceneContext, _wait, wait_for_done, write_frames_with_marker
from watchdog.events import DirModifiedEvent, FileClosedEvent, FileCreatedEvent, FileMovedEvent


def write_scene(output_dir: Path, prefix: str = "scene/frame") -> Path:
    images = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    return write_frames_with_marker(images, output_dir, prefix, context=SceneContext(prompt_id="p1")).marker_path


@pytest.fixture
def glob_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """Every folder listing wait_for_done makes (Path.glob), recorded."""
    calls: list[Path] = []
    real_glob = Path.glob

    def counting_glob(self: Path, pattern: str) -> Iterator[Path]:
        calls.append(self)
        return real_glob(self, pattern)

    monkeypatch.setattr(Path, "glob", counting_glob)
    yield calls


@pytest.mark.parametrize(
    ("event", "found"),
    [
        (FileMovedEvent("/out/s/.frame.done.ab12.tmp", "/out/s/frame.done"), ["frame.done"]),
        (FileCreatedEvent("/out/s/frame.done"), ["frame.done"]),
        (FileClosedEvent("/out/s/frame_00001_.png"), []),
        (FileCreatedEvent("/out/s/.frame.done.ab12.tmp"), []),
        (DirModifiedEvent("/out/s"), []),
        (FileCreatedEvent("/private/out/s/frame.done"), ["frame.done"]),  # macOS: a resolved path, same folder
    ],
)
def test_only_events_naming_the_marker_count(event: object, found: list[str]) -> None:
    folder = Path("/out/s")
    assert [p.name for p in _wait._marker_paths(event, folder / "frame.done")] == found
    assert [p.name for p in _wait._marker_paths(event, folder / "*.done")] == found
    assert all(p.parent == folder for p in _wait._marker_paths(event, folder / "*.done"))


def test_an_exact_marker_name_is_not_a_pattern() -> None:
    event = FileCreatedEvent("/out/s/frame[1].done")
    assert _wait._marker_paths(event, Path("/out/s/frame[1].done")) == [Path("/out/s/frame[1].done")]
    assert _wait._marker_paths(FileCreatedEvent("/out/s/frame1.done"), Path("/out/s/frame[1].done")) == []


def test_frames_written_into_a_watched_folder_never_list_it(output_dir: Path, glob_calls: list[Path]) -> None:
    """200 frames land beside the awaited marker: the folder is listed at the start only, not once per event."""
    folder = output_dir / "scene"
    folder.mkdir()
    for index in range(300):
        (folder / f"old_{index:05}.png").write_bytes(b"x")

    def produce() -> None:
        time.sleep(0.2)
        for index in range(200):
            (folder / f"noise_{index:05}.png").write_bytes(b"frame")
        write_scene(output_dir)

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        body = wait_for_done(folder, 20, poll_interval=30)
    finally:
        thread.join()
    assert body["FrameCount"] == 2
    listings = [p for p in glob_calls if p == folder]
    assert 1 <= len(listings) <= 3  # resolve + first check (+ the re-check once the observer runs)


def test_a_marker_completed_without_a_marker_event_is_found_by_the_poll(output_dir: Path) -> None:
    """The marker lands first and its frame later: no event names the marker again, the poll re-checks it."""
    marker = write_scene(output_dir)
    frame = marker.parent / "frame_00002_.png"
    data = frame.read_bytes()
    frame.unlink()

    def restore() -> None:
        time.sleep(0.3)
        frame.write_bytes(data)

    thread = threading.Thread(target=restore)
    thread.start()
    try:
        started = time.monotonic()
        body = wait_for_done(marker.parent, 10, poll_interval=0.1)
    finally:
        thread.join()
    assert body["FrameCount"] == 2
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("use_events", [True, False])
def test_folder_mode_wakes_for_a_new_marker(output_dir: Path, use_events: bool) -> None:
    folder = output_dir / "scene"
    folder.mkdir()
    thread = threading.Thread(target=lambda: (time.sleep(0.2), write_scene(output_dir)))
    thread.start()
    try:
        body = wait_for_done(folder, 10, poll_interval=0.05 if not use_events else 30, use_events=use_events)
    finally:
        thread.join()
    assert body["PromptId"] == "p1"


def test_no_inotify_watch_left_polls_and_leaves_no_thread(output_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused watch (inotify limits) means polling; the observer's reader thread must not outlive the wait."""
    from scene_telemetry.telemetry import DoneTimeoutError
    from watchdog.observers import Observer

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(Observer, "start", refuse)
    with pytest.raises(DoneTimeoutError):
        wait_for_done(output_dir, timeout=0.3, poll_interval=0.05)
    # the autouse no_thread_leaks fixture fails the test if the scheduled emitter's thread is still running
