"""wait_for_done on a folder: notification latency in an empty folder and in one holding 10,000 files.

    .venv/bin/python benchmarks/wait_latency.py [--files 10000] [--samples 40] [--frames 20] [--before REV]

Each sample: a waiter calls ``wait_for_done(FOLDER)`` (folder mode: whichever
``*.done`` appears; 5 s poll, so only a file event can end the wait quickly) while a
writer thread writes ``--frames`` frame files into the folder and then commits the
marker (temp file, fsync, rename). The latency runs from the marker's rename (the
instant just before ``os.replace`` is called; the instant after it is printed too) to
the moment ``wait_for_done`` returns. Values are never clamped: a negative one would
mean the clock was read wrongly, and is shown as it is. CPU is the process's CPU time
per sample (writer included, the same work in every case).

With ``--before REV`` the same samples run on that revision's ``telemetry/_wait.py``
(loaded from ``git show``), side by side. Target (issue 8): p50 in the 10,000-file
folder within 2x of the empty folder. Timings move with the load average (printed).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from scene_telemetry.telemetry import MarkedFile, _atomic, build_marker, commit_marker, wait_for_done

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 2.0
Waiter = Callable[..., dict[str, Any]]


def load_wait_at(rev: str) -> Waiter:
    """``wait_for_done`` as *rev* wrote it (its ``_wait.py`` run inside today's package)."""
    source = subprocess.run(
        ["git", "show", f"{rev}:telemetry/_wait.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    name = "scene_telemetry.telemetry._wait_before"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = ModuleType(name)
    module.__package__ = "scene_telemetry.telemetry"
    sys.modules[name] = module
    exec(compile(source, f"{rev}:telemetry/_wait.py", "exec"), module.__dict__)  # noqa: S102 - a benchmark's own input
    waiter: Waiter = module.wait_for_done
    return waiter


class RenameClock:
    """Records the instants around the marker's ``os.replace`` (the writer thread's rename)."""

    def __init__(self) -> None:
        self.before: float | None = None
        self.after: float | None = None
        self._real = _atomic.replace_with_retry

    def __enter__(self) -> RenameClock:
        def timed(src: Path, dst: Path) -> None:
            if dst.suffix == ".done":
                self.before = time.perf_counter()
                self._real(src, dst)
                self.after = time.perf_counter()
            else:
                self._real(src, dst)

        _atomic.replace_with_retry = timed  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        _atomic.replace_with_retry = self._real  # type: ignore[assignment]


def one_sample(folder: Path, frames: int, waiter: Waiter) -> tuple[float, float, float]:
    """(ms from the start of the rename, ms from its end, CPU ms) for one marker."""
    names = [f"frame_{i:05}_.png" for i in range(frames)]

    def produce() -> None:
        time.sleep(0.03)  # the waiter is listening by now
        for name in names:
            (folder / name).write_bytes(b"\x89PNG frame")
        body = build_marker(
            [MarkedFile(n, 10) for n in names], source="node", prefix="frame", subfolder="", width=8, height=8
        )
        commit_marker(folder / "frame.done", body)

    with RenameClock() as clock:
        cpu = time.process_time()
        writer = threading.Thread(target=produce)
        writer.start()
        waiter(folder, 30, poll_interval=5.0)
        woke = time.perf_counter()
        cpu = time.process_time() - cpu
        writer.join()
    (folder / "frame.done").unlink()
    for name in names:
        (folder / name).unlink()
    assert clock.before is not None and clock.after is not None
    return 1000 * (woke - clock.before), 1000 * (woke - clock.after), 1000 * cpu


def run_case(root: Path, existing: int, samples: int, frames: int, waiter: Waiter) -> dict[str, float]:
    folder = root / f"folder-{existing}"
    if not folder.exists():
        folder.mkdir()
        for index in range(existing):
            (folder / f"earlier_{index:06}.png").write_bytes(b"x")
    from_start, from_end, cpu = zip(*(one_sample(folder, frames, waiter) for _ in range(samples)), strict=True)
    ordered = sorted(from_start)
    return {
        "p50_ms": statistics.median(from_start),
        "p99_ms": ordered[max(0, int(len(ordered) * 0.99) - 1)],
        "min_ms": min(from_start),
        "p50_after_rename_ms": statistics.median(from_end),
        "min_after_rename_ms": min(from_end),
        "cpu_p50_ms": statistics.median(cpu),
        "cpu_max_ms": max(cpu),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--frames", type=int, default=20, help="frame files written before each marker")
    parser.add_argument("--before", metavar="REV", help="also run REV's wait_for_done, side by side")
    args = parser.parse_args()
    logging.getLogger("watchdog").setLevel(logging.ERROR)
    waiters: dict[str, Waiter] = {"now": wait_for_done}
    if args.before:
        waiters = {f"@{args.before}": load_wait_at(args.before), **waiters}
    load_before = os.getloadavg()[0]
    results: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="st-bench-wait-") as tmp:
        for label, waiter in waiters.items():
            for existing in (0, args.files):
                results[label, existing] = run_case(Path(tmp), existing, args.samples, args.frames, waiter)
    print(f"load average (1 min) before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"wait_for_done(folder), {args.samples} samples, {args.frames} frames written before each marker")
    header = ("code", "files", "p50 ms", "p99 ms", "min ms", "p50 from end", "CPU p50", "CPU max")
    print("{:<10} {:>6} {:>8} {:>8} {:>8} {:>13} {:>8} {:>8}".format(*header))
    met = True
    for label in waiters:
        for existing in (0, args.files):
            r = results[label, existing]
            print(
                f"{label:<10} {existing:>6} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['min_ms']:8.2f} "
                f"{r['p50_after_rename_ms']:13.2f} {r['cpu_p50_ms']:8.1f} {r['cpu_max_ms']:8.1f}"
            )
        ratio = results[label, args.files]["p50_ms"] / results[label, 0]["p50_ms"]
        print(f"{'':<10} p50 ratio {args.files} files / empty: {ratio:.2f}x (target <= {TARGET_RATIO:g}x)")
        if label == "now":
            met = ratio <= TARGET_RATIO
    print(f"target: {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
