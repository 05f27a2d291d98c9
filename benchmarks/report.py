"""Report speed and size: synthetic run folders of 10 and 1,000 scenes (real frames and markers).

    .venv/bin/python benchmarks/report.py [--scenes 10 1000] [--frames 3] [--size 480x270] [--repeat 3]

Each folder is a headless run as ``tests/report_runs.py`` writes it: every scene
with its frames, marker and telemetry file, one scene in seven failed. Writing the
folders is not timed. Then, for each folder, ``scene-telemetry report`` runs as a
fresh process (what a user waits for: interpreter start, imports, schema
compilation, validation, thumbnails, page) and ``write_report`` in-process; the
median of ``--repeat`` runs is printed beside the target (issue 13: 10 scenes in
<= 1 s, 1,000 scenes in <= 5 s and <= 5 MB), with the load average.
The exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from report_runs import Layout, make_runner_run  # noqa: E402
from scene_telemetry.report import write_report  # noqa: E402

TARGETS = {10: (1.0, 5_000_000), 1000: (5.0, 5_000_000)}
"""Scenes -> (seconds, bytes)."""


def time_cli(run_dir: Path, page: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "scene_telemetry.cli", "report", str(run_dir), "-o", str(page)],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"report exited {done.returncode}: {done.stderr or done.stdout}")
    return elapsed


def time_in_process(run_dir: Path, page: Path) -> tuple[float, int]:
    start = time.perf_counter()
    result = write_report(run_dir, page)
    return time.perf_counter() - start, result.bytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--frames", type=int, default=3, help="frames per scene")
    parser.add_argument("--size", default="480x270", help="frame size WxH")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    missed = False
    print(f"{os.cpu_count()} CPU(s); load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{'scenes':>7} {'CLI s (median)':>15} {'in-process s':>13} {'page MB':>8} {'target s':>9} {'target MB':>10}")
    with tempfile.TemporaryDirectory(prefix="report-bench-") as root:
        for count in args.scenes:
            run_dir = make_runner_run(
                Path(root) / f"run-{count}",
                Layout(scenes=count, frames=args.frames, width=width, height=height, fail_every=7),
            )
            page = Path(root) / f"report-{count}.html"
            cli = statistics.median(time_cli(run_dir, page) for _ in range(args.repeat))
            runs = [time_in_process(run_dir, page) for _ in range(args.repeat)]
            in_process = statistics.median(t for t, _ in runs)
            size = runs[-1][1]
            target_s, target_bytes = TARGETS.get(count, (float("inf"), float("inf")))
            ok = cli <= target_s and size <= target_bytes
            missed |= not ok
            print(
                f"{count:>7} {cli:>15.2f} {in_process:>13.2f} {size / 1e6:>8.2f} {target_s:>9} "
                f"{target_bytes / 1e6:>10}  {'ok' if ok else 'MISSED'}"
            )
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
