"""Writers and waits for the sentinel tests and benchmark: real files, written the way ComfyUI's savers write them."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image


def png_bytes(side: int = 8, shade: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (shade, shade, shade)).save(buffer, format="PNG")
    return buffer.getvalue()


def webp_bytes(frames: int = 3, side: int = 16) -> bytes:
    """An animated WEBP as SaveAnimatedWEBP writes it (PIL, the same encoder)."""
    images = [Image.new("RGB", (side, side), (i * 40, 0, 0)) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="WEBP", save_all=True, append_images=images[1:], duration=125, quality=80)
    return buffer.getvalue()


def gif_bytes(frames: int = 2, side: int = 8) -> bytes:
    images = [Image.new("P", (side, side), i) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:])
    return buffer.getvalue()


def box(kind: bytes, payload: bytes) -> bytes:
    return (8 + len(payload)).to_bytes(4, "big") + kind + payload


def mp4_bytes(mdat: int = 64, moov_last: bool = True) -> bytes:
    """A minimal ISO BMFF file: ftyp, mdat, moov (moov last, as a non-faststart writer leaves it)."""
    parts = [box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2mp41"), box(b"mdat", b"\x00" * mdat)]
    moov = box(b"moov", box(b"mvhd", b"\x00" * 100))
    return b"".join([*parts, moov] if moov_last else [parts[0], moov, parts[1]])


def write_file(path: Path, data: bytes, *, chunks: int = 1, gap_s: float = 0.0) -> None:
    """Write *data* to its final name in *chunks* pieces, *gap_s* apart (ComfyUI's savers are not atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    step = max(1, -(-len(data) // chunks))
    with open(path, "wb") as f:
        for start in range(0, len(data), step):
            f.write(data[start : start + step])
            f.flush()
            if gap_s and start + step < len(data):
                time.sleep(gap_s)


def write_batch(folder: Path, prefix: str, count: int, *, start: int = 1, data: bytes | None = None) -> list[str]:
    """SaveImage-style frames ``<prefix>_<counter:05>_.png``; returns the names in order."""
    payload = data if data is not None else png_bytes()
    names = [f"{prefix}_{start + i:05}_.png" for i in range(count)]
    for name in names:
        write_file(folder / name, payload)
    return names


def age(paths: list[Path], seconds: float = 600.0) -> None:
    """Backdate mtimes (files written 'while the sentinel was down')."""
    when = time.time() - seconds
    for path in paths:
        os.utime(path, (when, when))


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


@contextmanager
def running(service: Any) -> Iterator[threading.Thread]:
    """Run ``service.run()`` in a thread; stop and join it on exit (no leaked threads)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            service.run()
        except BaseException as exc:  # surfaced in the test thread below
            errors.append(exc)

    thread = threading.Thread(target=target, name="sentinel-under-test")
    thread.start()
    try:
        yield thread
    finally:
        service.stop()
        thread.join(10)
        assert not thread.is_alive(), "sentinel did not stop within 10 s"
    if errors:
        raise errors[0]


def start_sentinel(
    output_dir: Path, log: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``scene-telemetry sentinel --output-dir OUTPUT_DIR EXTRA...`` as a real process, its output appended to *log*."""
    command = [sys.executable, "-m", "scene_telemetry.cli", "sentinel", "--output-dir", str(output_dir), *extra]
    with open(log, "ab") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)


def stop_timed(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, float]:
    """Send *sig*; the exit code and the seconds the process took to exit after it."""
    sent = time.monotonic()
    process.send_signal(sig)
    code = process.wait(timeout=timeout)
    return code, time.monotonic() - sent


@contextmanager
def reaped(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """Kill and wait for *process* on the way out if the test left it running (a failed assertion, a timeout)."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def fail_first_marker_write(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Make the first marker commit fail with EACCES (then commit for real); returns the paths tried, in order."""
    from scene_telemetry.sentinel import _marking

    real = _marking.commit_marker
    calls: list[Path] = []

    def flaky(path: Path, body: object) -> Path:
        calls.append(path)
        if len(calls) == 1:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, body)  # type: ignore[arg-type]

    monkeypatch.setattr(_marking, "commit_marker", flaky)
    return calls
