"""The frame encoder pool: one thread per core, but never more than the memory budget holds."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from scene_telemetry.telemetry import _frames, write_frames_with_marker
from scene_telemetry.telemetry._frames import (
    BYTES_PER_VALUE_IN_FLIGHT,
    ENCODER_MEMORY_BUDGET_BYTES,
    encoder_pool_size,
    frame_to_uint8,
)

FULL_HD = 1920 * 1080 * 3


@pytest.mark.parametrize(
    ("frames", "values", "cores", "expected"),
    [
        (81, FULL_HD, 64, 28),  # 1 GiB / (6 B x 6.2 M values): the memory cap binds, not the 64 cores
        (81, 832 * 480 * 3, 64, 64),  # small frames: one thread per core
        (81, FULL_HD, 2, 2),  # this project's 2-core machine
        (81, 7680 * 4320 * 3, 64, 1),  # 8K: one frame in flight at a time
        (3, 64 * 64 * 3, 64, 3),  # never more threads than frames
        (81, FULL_HD, 1, 1),
    ],
)
def test_pool_size_by_cores_frames_and_memory(frames: int, values: int, cores: int, expected: int) -> None:
    workers = encoder_pool_size(frames, values, cpu_count=cores)
    assert workers == expected
    assert workers == 1 or workers * values * BYTES_PER_VALUE_IN_FLIGHT <= ENCODER_MEMORY_BUDGET_BYTES


def test_a_requested_pool_is_the_callers_choice_capped_by_frames() -> None:
    assert encoder_pool_size(81, FULL_HD, requested=40, cpu_count=2) == 40
    assert encoder_pool_size(5, FULL_HD, requested=40, cpu_count=64) == 5
    assert encoder_pool_size(5, FULL_HD, requested=0, cpu_count=64) == 1


def test_memory_per_host_stays_bounded_however_many_cores() -> None:
    sizes = [encoder_pool_size(1000, FULL_HD, cpu_count=cores) for cores in (8, 16, 64, 256)]
    assert sizes == [8, 16, 28, 28]


def test_saving_uses_the_capped_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64-core host and a budget of two frames in flight: frames are encoded on at most two threads."""
    images = np.random.default_rng(0).random((8, 16, 16, 3), dtype=np.float32)
    per_frame = 16 * 16 * 3 * BYTES_PER_VALUE_IN_FLIGHT
    monkeypatch.setattr(_frames.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(_frames, "ENCODER_MEMORY_BUDGET_BYTES", 2 * per_frame)
    threads: set[str] = set()
    real_write = _frames._write_png

    def recording_write(array: np.ndarray, target: Path, info: object) -> int:
        threads.add(threading.current_thread().name)
        return real_write(array, target, info)  # type: ignore[arg-type]

    monkeypatch.setattr(_frames, "_write_png", recording_write)
    result = write_frames_with_marker(images, tmp_path, "frame")
    assert len(result.frame_paths) == 8
    assert 1 <= len(threads) <= 2


def test_in_place_clip_gives_saveimages_pixels() -> None:
    """SaveImage: np.clip(255. * i, 0, 255).astype(np.uint8); the in-place clip must give the same bytes."""
    frame = np.random.default_rng(1).normal(0.5, 0.6, (7, 9, 3)).astype(np.float32)  # values outside 0..1 too
    expected = np.clip(255.0 * frame, 0, 255).astype(np.uint8)
    assert np.array_equal(frame_to_uint8(frame), expected)
    assert np.array_equal(frame_to_uint8(frame[:, :, :1]), expected[:, :, 0])
