"""The atomic writer: readers never see a torn file, failures leave nothing behind."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import pytest
from scene_telemetry.telemetry import _atomic
from scene_telemetry.telemetry._atomic import TEMP_SUFFIX, atomic_write_bytes, atomic_write_text, sweep_stale_temps


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX)]


def test_writes_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "m.done"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert _temps(tmp_path) == []


def test_relative_path_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    atomic_write_bytes("rel.bin", b"\x00\x01")
    assert (tmp_path / "rel.bin").read_bytes() == b"\x00\x01"


def test_failure_keeps_original_and_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "m.done"
    target.write_text("original")

    class Boom(RuntimeError):
        pass

    def failing_fsync(fd: int) -> None:
        raise Boom("disk on fire")

    monkeypatch.setattr(_atomic, "fsync_file", failing_fsync)
    with pytest.raises(Boom, match="disk on fire"):
        atomic_write_text(target, "new")
    assert target.read_text() == "original"
    assert _temps(tmp_path) == []


def test_replace_failure_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "m.done"

    def failing_replace(src: Path, dst: Path) -> None:
        raise PermissionError(13, "denied")

    monkeypatch.setattr(_atomic, "replace_with_retry", failing_replace)
    with pytest.raises(PermissionError):
        atomic_write_text(target, "new")
    assert not target.exists()
    assert _temps(tmp_path) == []


def test_missing_directory_raises_without_litter(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "nope" / "m.done", "x")


def test_sweep_removes_only_old_own_temps(tmp_path: Path) -> None:
    old = tmp_path / f".m.done.abcdef123456{TEMP_SUFFIX}"
    fresh = tmp_path / f".m.done.0123456789ab{TEMP_SUFFIX}"
    foreign = tmp_path / ".hidden.tmp"
    for p in (old, fresh, foreign):
        p.write_text("x")
    past = time.time() - 7200
    os.utime(old, (past, past))
    os.utime(foreign, (past, past))
    removed = sweep_stale_temps(tmp_path, older_than_s=3600)
    assert removed == [old]
    assert fresh.exists() and foreign.exists()


def test_sweep_of_missing_directory_is_empty(tmp_path: Path) -> None:
    assert sweep_stale_temps(tmp_path / "absent") == []


def test_windows_retry_on_sharing_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On Windows a briefly locked target is retried, a real permission error is not."""
    calls: list[int] = []
    real_replace = os.replace

    def flaky_replace(src: object, dst: object) -> None:
        calls.append(1)
        if len(calls) < 3:
            exc = PermissionError(13, "sharing violation")
            exc.winerror = 32  # type: ignore[attr-defined]
            raise exc
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(_atomic.os, "name", "nt")
    monkeypatch.setattr(_atomic.os, "replace", flaky_replace)
    monkeypatch.setattr(_atomic, "_WINDOWS_RETRY_DELAY_S", 0.001)
    src = tmp_path / "a"
    src.write_text("x")
    _atomic.replace_with_retry(src, tmp_path / "b")
    assert len(calls) == 3 and (tmp_path / "b").read_text() == "x"

    def denied(src: object, dst: object) -> None:
        exc = PermissionError(13, "access denied")
        exc.winerror = 1307  # type: ignore[attr-defined]
        raise exc

    monkeypatch.setattr(_atomic.os, "replace", denied)
    with pytest.raises(PermissionError):
        _atomic.replace_with_retry(tmp_path / "b", tmp_path / "c")


def test_frames_get_the_same_windows_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PNG frames are renamed into place like every other file: a briefly locked target is retried."""
    import numpy as np
    from scene_telemetry.telemetry._frames import save_png_frames

    calls: list[str] = []
    real_replace = os.replace

    def locked_twice(src: object, dst: object) -> None:
        calls.append(str(dst))
        if len(calls) < 3:
            exc = PermissionError(13, "sharing violation")
            exc.winerror = 32  # type: ignore[attr-defined]
            raise exc
        real_replace(src, dst)  # type: ignore[arg-type]

    targets = [tmp_path / "f_00001_.png"]
    # Only the atomic module sees Windows (a global os.name of "nt" breaks pathlib, pytest's included).
    windows_os = types.SimpleNamespace(**{**vars(os), "name": "nt", "replace": locked_twice})
    monkeypatch.setattr(_atomic, "os", windows_os)
    monkeypatch.setattr(_atomic, "_WINDOWS_RETRY_DELAY_S", 0.001)
    sizes = save_png_frames(np.zeros((1, 4, 4, 3), dtype=np.float32), targets, info=None, workers=1)
    assert calls == [str(targets[0])] * 3
    assert sizes == [targets[0].stat().st_size] and _temps(tmp_path) == []


_REWRITER = textwrap.dedent(
    """
    import json, sys
    from scene_telemetry.telemetry._atomic import atomic_write_text
    target = sys.argv[1]
    i = 0
    while True:
        i += 1
        body = {"Seq": i, "Files": [{"Name": f"frame_{n:05}_.png", "Bytes": n * 1000} for n in range(200)]}
        atomic_write_text(target, json.dumps(body))
        if i == 1:
            sys.stdout.write("ready\\n"); sys.stdout.flush()
    """
)


def _assert_whole(path: Path) -> int:
    body = json.loads(path.read_text())
    assert len(body["Files"]) == 200
    return int(body["Seq"])


def test_sigkill_mid_rewrite_never_tears(tmp_path: Path) -> None:
    """A writer killed with SIGKILL at random points leaves the old or the new marker, never a torn one."""
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("SIGKILL is POSIX-only")
    target = tmp_path / "frame.done"
    rng = random.Random(1234)
    for _ in range(8):
        child = subprocess.Popen([sys.executable, "-c", _REWRITER, str(target)], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.05))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
        _assert_whole(target)
    leftovers = _temps(tmp_path)
    assert len(leftovers) <= 8, "at most one in-flight temp per killed writer"
    sweep_stale_temps(tmp_path, older_than_s=-1)
    assert _temps(tmp_path) == []


def test_concurrent_reader_never_sees_torn_json(tmp_path: Path) -> None:
    target = tmp_path / "frame.done"
    atomic_write_text(target, json.dumps({"Seq": 0, "Files": [{"Name": "x", "Bytes": 1}] * 200}))
    stop = threading.Event()
    errors: list[str] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                _assert_whole(target)
                reads += 1
            except (ValueError, AssertionError) as exc:
                errors.append(repr(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for seq in range(1, 300):
            atomic_write_text(target, json.dumps({"Seq": seq, "Files": [{"Name": "x", "Bytes": seq}] * 200}))
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert reads > 0
    assert _assert_whole(target) == 299
