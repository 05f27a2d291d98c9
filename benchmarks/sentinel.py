"""Sentinel scale: idle cost over a large output directory, and marker latency for new batches.

Scenario (issue 10): 1,000 folders holding 100,000 frames (tiny 8x8 PNGs: the sentinel reads
directory entries, stats and a file's last 12 bytes, so frame size does not matter), all already
marked. Then:

1. idle: the sentinel runs as a real process (``scene-telemetry sentinel``) for ``--idle-seconds``;
   CPU is the process's utime+stime over that window (% of one core), RSS from /proc. Measured in
   event mode and in polling mode (what a network share gets).
2. new batches: 200 batches of 5 frames arrive in new folders, a few milliseconds apart; every
   marker must list exactly its batch and verify, and its latency is the marker file's mtime minus
   the batch's last file close. Target (filesystem mode): <= quiet + 1 s.

3. server mode: 200 prompts through the loopback ComfyUI stand-in (tests/fake_comfy.py, needs the test extra),
   one after another; latency from the history entry being written (files complete) to the marker on disk.
   Target: <= 1 s.

Linux only (/proc). Prints one table; ``--json`` for machine-readable output.

    .venv/bin/python benchmarks/sentinel.py [--folders 1000] [--frames 100000] [--batches 200] [--quiet 5]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from scene_telemetry.telemetry import verify_marker

TARGET_IDLE_CPU_PCT = 1.0
TARGET_RSS_MB = 150.0
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (40, 80, 120)).save(buffer, format="PNG")
    return buffer.getvalue()


def populate(out: Path, folders: int, frames: int, data: bytes) -> None:
    per_folder = max(1, frames // folders)
    old = time.time() - 3600
    for f in range(folders):
        folder = out / f"scene{f:04}" / "shots"
        folder.mkdir(parents=True)
        for i in range(per_folder):
            path = folder / f"frame_{i + 1:05}_.png"
            path.write_bytes(data)
            os.utime(path, (old, old))


def start(out: Path, quiet: float, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "scene_telemetry.cli", "sentinel", "--output-dir", str(out)]
    command += ["--quiet-seconds", f"{quiet:g}", *extra]
    with open(log, "ab") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)


def wait_log(log: Path, text: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.read_text("utf-8", "replace").count(text) >= count:
            return
        time.sleep(0.05)
    raise RuntimeError(f"'{text}' x{count} not in the sentinel log after {timeout} s:\n{log.read_text()[-2000:]}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15 of the full line)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def idle(out: Path, quiet: float, seconds: float, log: Path, *extra: str) -> dict[str, float]:
    process = start(out, quiet, log, *extra)
    try:
        wait_log(log, "initial scan:", log.read_text().count("initial scan:") + 1, 300)
        time.sleep(1.0)
        before, t0 = cpu_seconds(process.pid), time.monotonic()
        time.sleep(seconds)
        used, elapsed = cpu_seconds(process.pid) - before, time.monotonic() - t0
        return {"cpu_pct": 100 * used / elapsed, "rss_mb": rss_mb(process.pid)}
    finally:
        stop(process)


def batches(out: Path, quiet: float, count: int, log: Path, data: bytes, *extra: str) -> dict[str, float]:
    process = start(out, quiet, log, *extra)
    expected: dict[Path, tuple[list[str], float]] = {}
    tag = "poll" if extra else "events"
    try:
        wait_log(log, "initial scan:", log.read_text().count("initial scan:") + 1, 300)
        for b in range(count):
            folder = out / f"new-{tag}" / f"b{b:03}"
            folder.mkdir(parents=True)
            names = [f"frame_{i + 1:05}_.png" for i in range(5)]
            for name in names:
                (folder / name).write_bytes(data)
            expected[folder / "frame.done"] = (names, time.time())
            time.sleep(0.005)
        deadline = time.monotonic() + quiet + 60
        while time.monotonic() < deadline and not all(m.exists() for m in expected):
            time.sleep(0.1)
        time.sleep(quiet + 1)  # a repeated marker would show up now
    finally:
        stop(process)
    latencies, wrong = [], 0
    for marker, (names, last_close) in expected.items():
        try:
            body = verify_marker(marker)
        except Exception:  # missing or invalid: counted, reported below
            wrong += 1
            continue
        if [f["Name"] for f in body["Files"]] != names or body["Source"] != "sentinel":
            wrong += 1
        latencies.append(marker.stat().st_mtime - last_close)
    latencies.sort()
    return {
        "batches": count,
        "wrong_or_missing": wrong,
        "latency_p50_s": statistics.median(latencies) if latencies else float("nan"),
        "latency_max_s": latencies[-1] if latencies else float("nan"),
    }


def server_batches(root: Path, count: int) -> dict[str, float]:
    """Server mode against the loopback ComfyUI stand-in (tests/fake_comfy.py replays the recorded 0.8.0 replies).

    Each prompt saves 5 frames and writes its history entry (the files are complete before it); latency is
    from that moment to the marker being on disk, as seen by polling for it every 2 ms.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import threading
    import uuid

    from fake_comfy import FakeComfy, Scenario
    from scene_telemetry.comfy_api.client import ComfyClient
    from scene_telemetry.sentinel import Journal, ServerSentinel

    out = root / "server-output"
    out.mkdir()
    latencies, wrong = [], 0
    with FakeComfy(Scenario(write_marker=False, frames=5), output_dir=out) as fake:
        service = ServerSentinel(fake.url, out, Journal.load(out / ".state.json"))
        thread = threading.Thread(target=service.run, name="sentinel")
        thread.start()
        try:
            service.ready.wait(30)
            client = ComfyClient(fake.url)
            for b in range(count):
                graph = {
                    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 5, "color": b}},
                    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": f"s/b{b:03}/f"}},
                }
                prompt_id = str(uuid.uuid4())
                client.submit(graph, prompt_id=prompt_id)
                marker = out / "s" / f"b{b:03}" / "f.done"
                deadline = time.monotonic() + 30
                while not marker.exists() and time.monotonic() < deadline:
                    time.sleep(0.002)
                seen = time.perf_counter()
                try:
                    body = verify_marker(marker)
                except Exception:  # missing or invalid: counted below
                    wrong += 1
                    continue
                entry = fake.history_entry(prompt_id) or {}
                listed = [i["filename"] for i in entry.get("outputs", {}).get("2", {}).get("images", [])]
                if body["PromptId"] != prompt_id or [f["Name"] for f in body["Files"]] != listed:
                    wrong += 1
                latencies.append(seen - fake.history_written_at[prompt_id])
        finally:
            service.stop()
            thread.join(10)
    latencies.sort()
    return {
        "batches": count,
        "wrong_or_missing": wrong,
        "latency_p50_s": statistics.median(latencies) if latencies else float("nan"),
        "latency_max_s": latencies[-1] if latencies else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--quiet", type=float, default=5.0)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not Path("/proc/self/stat").exists():
        print("this benchmark reads /proc (Linux only)")
        return 2
    data = tiny_png()
    root = Path(tempfile.mkdtemp(prefix="sentinel-bench-"))
    out, log = root / "output", root / "sentinel.log"
    results: dict[str, object] = {"load_average": os.getloadavg(), "cpus": os.cpu_count()}
    try:
        t0 = time.monotonic()
        populate(out, args.folders, args.frames, data)
        results["populate_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        once = subprocess.run(
            [sys.executable, "-m", "scene_telemetry.cli", "sentinel", "--output-dir", str(out), "--once",
             "--quiet-seconds", f"{args.quiet:g}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if once.returncode != 0:
            print(f"sentinel --once failed ({once.returncode}):\n{once.stderr[-3000:]}")
            return 1
        results["catch_up_s"] = time.monotonic() - t0
        results["catch_up_markers"] = once.stdout.strip()
        results["idle_events"] = idle(out, args.quiet, args.idle_seconds, log)
        results["idle_polling"] = idle(out, args.quiet, args.idle_seconds, log, "--poll")
        results["new_batches_events"] = batches(out, args.quiet, args.batches, log, data)
        results["new_batches_polling"] = batches(out, args.quiet, args.batches, log, data, "--poll")
        results["new_batches_server"] = server_batches(root, args.batches)
        results["load_average_end"] = os.getloadavg()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    per = f"{args.frames:,} frames in {args.folders:,} folders"
    print(f"sentinel benchmark: {per}, quiet {args.quiet:g} s, {results['cpus']} CPUs")
    print(f"load average at start {results['load_average']}, at end {results['load_average_end']}")
    print(f"populate {results['populate_s']:.1f} s; first run --once (marks all): {results['catch_up_s']:.1f} s "
          f"({results['catch_up_markers']})")  # fmt: skip
    for mode in ("events", "polling"):
        i = results[f"idle_{mode}"]
        assert isinstance(i, dict)
        print(
            f"idle {mode:8}: CPU {i['cpu_pct']:.2f} % of a core (target <= {TARGET_IDLE_CPU_PCT:g}), "
            f"RSS {i['rss_mb']:.0f} MB (target <= {TARGET_RSS_MB:g})"
        )
    for mode in ("events", "polling"):
        b = results[f"new_batches_{mode}"]
        assert isinstance(b, dict)
        print(
            f"{b['batches']} new batches, {mode:8}: wrong/missing {b['wrong_or_missing']}, latency after last file "
            f"p50 {b['latency_p50_s']:.2f} s, max {b['latency_max_s']:.2f} s "
            f"(target <= quiet + 1 = {args.quiet + 1:g} s)"
        )
    b = results["new_batches_server"]
    assert isinstance(b, dict)
    print(
        f"{b['batches']} prompts, server mode (fake ComfyUI): wrong/missing {b['wrong_or_missing']}, latency after "
        f"the files are complete p50 {b['latency_p50_s']:.2f} s, max {b['latency_max_s']:.2f} s (target <= 1 s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
