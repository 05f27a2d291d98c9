"""Farm makespan: 40 scenes over 4 fake ComfyUI servers of speeds 1x, 1x, 2x and 4x.

    .venv/bin/python benchmarks/farm.py [--scenes 40] [--unit-seconds 2.0] [--no-celery]

Each server is the loopback ComfyUI stand-in (tests/fake_comfy.py, the recorded 0.8.0 replies) running one
prompt at a time; a scene takes ``unit / speed`` seconds of "GPU" time there, plus the real protocol
(websocket, POST /prompt, /history, the marker and frames copied through /view). Printed side by side:

- ideal: total work / total speed (``scenes x unit / 8``): no scheduler can beat it;
- static round-robin: scene i on server i mod 4, each server working through its share (what "jobs queued
  equally on mixed GPUs" does);
- the in-process dispatcher (``run --server … --server …``): pull-based, one scene in flight per server;
- Celery (``farm worker`` x 4 + ``farm submit``), with a real redis-server, unless ``--no-celery`` or
  redis-server is missing; measured from the first scene queued to the last record on disk.

Goal (issue 11): the dispatcher and Celery within 15 % of ideal; round-robin far worse. Timings move with
the load average, printed before and after.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fake_comfy import FakeComfy, Scenario  # noqa: E402
from scene_telemetry.comfy_api.client import ComfyClient  # noqa: E402
from scene_telemetry.farm.dispatch import Dispatcher, SharedRunState  # noqa: E402
from scene_telemetry.farm.servers import FarmServer, instance_id  # noqa: E402
from scene_telemetry.runner.options import RunOptions  # noqa: E402
from scene_telemetry.runner.policy import QueuePolicy  # noqa: E402
from scene_telemetry.runner.scene import SceneExecutor  # noqa: E402
from scene_telemetry.runner.scenes import MARKER_CLASS, Scene, parse_mapping  # noqa: E402

SPEEDS = (1.0, 1.0, 2.0, 4.0)
TARGET = 1.15
POLICY = QueuePolicy(
    max_wait_seconds=60.0,
    history_poll_interval_seconds=0.5,
    max_attempt_count=0,
    post_execution_timeout_seconds=10.0,
    scene_retry_budget=0,
)
WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 0}},
    "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": 1, "strength": 0.5}},
    "3": {"class_type": MARKER_CLASS, "inputs": {"images": ["2", 0], "filename_prefix": "x/frame", "scene_id": ""}},
}
MAPPING = parse_mapping({"seed": "id:2.seed"})


def start_fakes(root: Path, unit: float) -> list[FakeComfy]:
    return [
        FakeComfy(Scenario(run_seconds=unit / speed), output_dir=root / f"out{n}").start()
        for n, speed in enumerate(SPEEDS)
    ]


def options(run_dir: Path, url: str, run_id: str) -> RunOptions:
    return RunOptions(server=url, run_dir=run_dir, policy=POLICY, run_id=run_id, gpu_snapshots=False)


def scenes(count: int) -> list[Scene]:
    return [Scene(f"s{i:02d}", {"seed": i}) for i in range(count)]


def round_robin(fakes: list[FakeComfy], run_dir: Path, count: int) -> tuple[float, int]:
    """Scene i on server i mod 4, each server's share one after another; (makespan, failures)."""
    opts = options(run_dir, fakes[0].url, "rr")
    state = SharedRunState.new(run_dir, "rr")
    shares = {n: [s for i, s in enumerate(scenes(count)) if i % len(fakes) == n] for n in range(len(fakes))}
    failures: list[int] = []

    def work(n: int) -> None:
        executor = SceneExecutor(ComfyClient(fakes[n].url), WORKFLOW, MAPPING, opts, state)
        failures.extend(1 for scene in shares[n] if not executor.run(scene).ok)

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(fakes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started, len(failures)


def dispatcher(fakes: list[FakeComfy], run_dir: Path, count: int) -> tuple[float, int]:
    servers = [FarmServer(f.url, instance_id(f.url, None)) for f in fakes]
    state = SharedRunState.new(run_dir, "pull")
    farm = Dispatcher(servers, WORKFLOW, MAPPING, options(run_dir, fakes[0].url, "pull"), state)
    started = time.monotonic()
    outcomes = farm.run(scenes(count))
    return time.monotonic() - started, sum(1 for o in outcomes if not o.ok)


def celery(fakes: list[FakeComfy], root: Path, count: int) -> tuple[float, int] | str:
    """Four real ``farm worker`` processes and an in-process submit; (makespan, failures) or why not run."""
    binary = shutil.which("redis-server")
    if binary is None:
        return "redis-server is not installed"
    from redis_server import start_redis
    from scene_telemetry.farm.celery_app import QUEUE, TASK_NAME, make_app
    from scene_telemetry.farm.inspect import farm_status
    from scene_telemetry.farm.tasks import mapping_to_json, read_record, record_path

    redis = start_redis(Path(tempfile.mkdtemp(dir=root)))
    procs = []
    try:
        for fake in fakes:
            args = [sys.executable, "-m", "scene_telemetry.cli", "farm", "worker", "--broker", redis.url]
            args += ["--server", fake.url, "--visibility-timeout-seconds", "300"]
            procs.append(
                subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            )
        deadline = time.monotonic() + 120
        while len(farm_status(redis.url, visibility_timeout_s=300).workers) < len(fakes):
            if time.monotonic() > deadline:
                return "the workers did not come up within 120 s"
            time.sleep(0.5)
        run_dir = root / "celery"
        (run_dir / ".farm" / "scenes").mkdir(parents=True)
        app = make_app(redis.url, visibility_timeout_s=300)
        base = {
            "run_id": "celery",
            "run_name": run_dir.name,
            "run_dir": str(run_dir),
            "workflow": WORKFLOW,
            "mapping": mapping_to_json(MAPPING),
            "policy": POLICY.as_dict(),
            "gpu_snapshots": False,
            "attempt": 1,
            "retries_left": 0,
        }
        started = time.monotonic()
        for scene in scenes(count):
            payload = {**base, "scene": {"id": scene.id, "values": scene.values}}
            app.send_task(TASK_NAME, args=[payload], task_id=f"celery:{scene.id}:1", queue=QUEUE)
        app.close()
        records: dict[str, dict[str, Any]] = {}
        while len(records) < count:
            for scene in scenes(count):
                record = records.get(scene.id) or read_record(record_path(run_dir, scene.id))
                if record is not None:
                    records[scene.id] = record
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        failures = sum(1 for r in records.values() if r["Document"]["HistoryExitReason"] != "success")
        return elapsed, failures
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        redis.stop()


def row(name: str, makespan: float, ideal: float, rr: float | None, failures: int) -> str:
    vs_rr = f"{makespan / rr:6.2f}x" if rr else "     -"
    return f"{name:<22} {makespan:8.2f} s {makespan / ideal:7.2f}x {vs_rr}   {failures}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--unit-seconds", type=float, default=2.0, help="a scene's time on a 1x server")
    parser.add_argument("--no-celery", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    ideal = args.scenes * args.unit_seconds / sum(SPEEDS)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fakes = start_fakes(root, args.unit_seconds)
        try:
            rr, rr_fail = round_robin(fakes, root / "rr", args.scenes)
            pull, pull_fail = dispatcher(fakes, root / "pull", args.scenes)
            cel = None if args.no_celery else celery(fakes, root, args.scenes)
        finally:
            for fake in fakes:
                fake.stop()
    speeds = ", ".join(f"{s:g}x" for s in SPEEDS)
    print(f"{args.scenes} scenes, servers at {speeds}, {args.unit_seconds:g} s a scene at 1x")
    print(f"{'':<22} {'makespan':>10} {'vs ideal':>8} {'vs RR':>7}   failures")
    print(f"{'ideal (work / speed)':<22} {ideal:8.2f} s {1.0:7.2f}x {ideal / rr:6.2f}x   -")
    print(row("static round-robin", rr, ideal, None, rr_fail))
    print(row("in-process dispatcher", pull, ideal, rr, pull_fail))
    if isinstance(cel, tuple):
        print(row("celery (4 workers)", cel[0], ideal, rr, cel[1]))
    elif isinstance(cel, str):
        print(f"celery: not measured: {cel}")
    print(f"goal: within {TARGET:.2f}x of ideal")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
