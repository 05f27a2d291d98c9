"""Cost of one /scene-telemetry/metrics scrape with a full ComfyUI history (issue 12: ≤ 5 ms at 10,000 entries).

    .venv/bin/python benchmarks/metrics_scrape.py [--runs N] [--history N]

The queue is a stand-in with the attributes of ComfyUI 0.8.0's PromptQueue (execution.py)
and history entries of the real shape (prompt tuple, outputs, status with messages). Rows:

- ``queue_counts``: counting pending/running and history by status (lock-free);
- ``render, no devices``: the whole exposition (recorder + queue/history) without a GPU probe;
- ``render, this machine's devices``: plus the real device probe of this machine (NVML when a driver
  answers; on a CPU box the snapshot chain that finds no accelerator);
- ``render while the worker churns history``: the same scrape while another thread evicts/adds entries
  as ``task_done`` does (the scrape never waits for the worker, and never fails).

The ComfyUI history's own ``/history`` endpoint copies every entry under the queue's mutex; the scrape
does neither. Load average is printed beside the numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from scene_telemetry.telemetry import device_memory_now, record_marker, record_scene, render_metrics
from scene_telemetry.telemetry._exposition import queue_counts


class PromptQueue:
    """ComfyUI 0.8.0's PromptQueue attributes, filled like a server that ran *history* prompts."""

    def __init__(self, history: int) -> None:
        self.mutex = threading.RLock()
        self.queue: list[tuple[Any, ...]] = [(n, f"q{n}", {}, {}, ["9"]) for n in range(20)]
        self.currently_running: dict[int, tuple[Any, ...]] = {0: (0, "r0", {}, {}, ["9"])}
        self.history: dict[str, dict[str, Any]] = {}
        for n in range(history):
            self.history[f"prompt-{n:06d}"] = entry(n)


def entry(n: int) -> dict[str, Any]:
    status = "error" if n % 17 == 0 else "success"
    messages = [["execution_start", {"prompt_id": f"prompt-{n:06d}", "timestamp": 1}], ["execution_success", {}]]
    return {
        "prompt": (n, f"prompt-{n:06d}", {"3": {"class_type": "KSampler", "inputs": {}}}, {}, ["9"]),
        "outputs": {"9": {"images": [{"filename": f"f_{n:05d}_.png", "subfolder": "", "type": "output"}]}},
        "status": {"status_str": status, "completed": status == "success", "messages": messages},
        "meta": {"9": {"node_id": "9", "display_node": "9", "parent_node": None, "real_node_id": "9"}},
    }


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def line(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"{name:<44} {len(samples):>5} {statistics.median(ordered) * 1e3:>10.3f} {p95 * 1e3:>10.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--history", type=int, default=10_000)
    args = parser.parse_args()
    queue = PromptQueue(args.history)
    for n in range(100):  # a pack that has written markers and scenes: every family has series
        record_marker(48, 48 * 1_500_000, 0.5 + n / 100)
        record_scene({"HistoryExitReason": "success", "DurationSeconds": 30.0 + n, "GPU": {"VramPeakMB": 20000}})
    render_metrics(lambda: queue, lambda: [])  # first scrape imports prometheus_client
    device_memory_now()  # first probe initialises NVML (or remembers its absence)

    rows = [
        line("queue_counts", timed(lambda: queue_counts(queue), args.runs)),
        line("render, no devices", timed(lambda: render_metrics(lambda: queue, lambda: []), args.runs)),
        line("render, this machine's devices", timed(lambda: render_metrics(lambda: queue), args.runs)),
    ]
    stop = threading.Event()

    def churn() -> None:
        n = args.history
        while not stop.is_set():
            with queue.mutex:  # as task_done does
                queue.history.pop(next(iter(queue.history)))
                queue.history[f"prompt-{n:06d}"] = entry(n)
            n += 1
            time.sleep(0.0005)

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        rows.append(
            line("render while the worker churns history", timed(lambda: render_metrics(lambda: queue), args.runs))
        )
    finally:
        stop.set()
        worker.join()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"/scene-telemetry/metrics scrape, {args.history} history entries (target ≤ 5 ms); "
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load:.2f}"
    )
    print(f"{'what':<44} {'runs':>5} {'median ms':>10} {'p95 ms':>10}")
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
