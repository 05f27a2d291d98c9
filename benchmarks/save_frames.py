"""Frame saving, marker latency and wait_for_done notification latency.

Run: python benchmarks/save_frames.py [--frames 81 --width 832 --height 480 --repeats 3]
                                      [--memory-width 1920 --memory-height 1080]

1. 81 frames 832x480: WriteDoneMarker's save (parallel encode, per-frame fsync,
   then the marker) versus ComfyUI SaveImage's own sequential loop (PIL,
   compress_level=4, no fsync), measured side by side in one run, with a
   pixel-identity (and byte-identity) check of every PNG. Target: >= 1.7x.
   The speed-up comes from encoding on several cores at once: it needs idle cores,
   so the load average is printed beside it (other work on the cores shrinks it).
   Beside it, the peak RSS of each save, each in a fresh process (the frames
   already in memory; the growth while saving is what the encoder pool costs):
   SaveImage's loop, WriteDoneMarker on this host, and WriteDoneMarker on a
   pretended 64-core host, both with the pool capped by frame size
   (``encoder_pool_size``) and with the old rule of one thread per core.
2. Marker commit latency (validate + temp + fsync + replace + dir fsync).
3. wait_for_done notification latency: marker committed on one thread, waiter
   (watchdog events) on another; p50/p99, measured from the marker's rename (the
   instant ``os.replace`` is called, benchmarks/wait_latency.py's RenameClock) and
   never clamped. Target: p99 <= 50 ms on local disk.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from saveimage_reference import save_images_like_comfyui  # noqa: E402
from scene_telemetry.telemetry import (  # noqa: E402  # noqa: E402
    MarkedFile,
    SceneContext,
    build_marker,
    commit_marker,
    wait_for_done,
    write_frames_with_marker,
)
from wait_latency import RenameClock  # noqa: E402

PROMPT = {"1": {"class_type": "EmptyImage", "inputs": {}}}
WORKFLOW = {"workflow": {"nodes": [], "links": []}}


def video_like_frames(frames: int, height: int, width: int) -> torch.Tensor:
    """Smooth moving gradients plus mild noise: compresses like decoded video, not like white noise."""
    y = torch.linspace(0, 1, height).view(1, height, 1).expand(frames, height, width)
    x = torch.linspace(0, 1, width).view(1, 1, width).expand(frames, height, width)
    t = torch.linspace(0, 1, frames).view(frames, 1, 1).expand(frames, height, width)
    base = torch.stack([(x + t) % 1.0, y * 0.8 + 0.1 * t, 0.5 + 0.5 * torch.sin(6 * (x - t))], dim=3)
    noise = torch.rand(frames, height, width, 3, generator=torch.Generator().manual_seed(0)) * 0.04
    return (base + noise).clamp(0, 1)


def bench_save(images: torch.Tensor, repeats: int) -> None:
    baseline, ours = [], []
    for r in range(repeats):
        with tempfile.TemporaryDirectory(dir=".") as a, tempfile.TemporaryDirectory(dir=".") as b:
            t0 = time.perf_counter()
            names = save_images_like_comfyui(images, a, "frame", 1, PROMPT, WORKFLOW)
            baseline.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            write_frames_with_marker(images, b, "frame", prompt=PROMPT, extra_pnginfo=WORKFLOW)
            ours.append(time.perf_counter() - t0)
            if r == 0:
                for name in names:
                    assert Path(a, name).read_bytes() == Path(b, name).read_bytes(), f"{name} differs"
    base_s, ours_s = statistics.median(baseline), statistics.median(ours)
    n = images.shape[0]
    load = os.getloadavg()[0]
    print(
        f"save {n} frames {images.shape[2]}x{images.shape[1]} (median of {repeats}), cpu_count={os.cpu_count()}, "
        f"load average (1 min) {load:.2f}: the speed-up needs idle cores"
    )
    print(f"  SaveImage sequential loop (no fsync): {base_s:7.3f} s  ({n / base_s:6.1f} frames/s)")
    print(f"  WriteDoneMarker (parallel + fsync + marker): {ours_s:7.3f} s  ({n / ours_s:6.1f} frames/s)")
    print(f"  speed-up: {base_s / ours_s:.2f}x (target >= 1.7x); PNGs byte-identical: yes")


def frames_in_place(frames: int, height: int, width: int) -> torch.Tensor:
    """Like :func:`video_like_frames`, built one frame at a time (no batch-sized temporaries to inflate peak RSS)."""
    batch = torch.empty(frames, height, width, 3)
    for index in range(frames):
        batch[index] = video_like_frames(1, height, width)[0] * (0.5 + 0.5 * index / max(1, frames - 1))
    return batch


def _rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def memory_child(mode: str, frames: int, height: int, width: int) -> None:
    """One save in this fresh process; prints {"before": MiB, "peak": MiB, "threads": n} as JSON."""
    from scene_telemetry.telemetry import _frames

    images = frames_in_place(frames, height, width)
    values = height * width * 3
    requested = None
    if mode.startswith("ours-64"):
        _frames.os.cpu_count = lambda: 64  # type: ignore[assignment]
        requested = min(64, frames) if mode == "ours-64-uncapped" else None
    threads = 1 if mode == "saveimage" else _frames.encoder_pool_size(frames, values, requested=requested)
    before = _rss_mib()
    with tempfile.TemporaryDirectory(dir=".") as folder:
        if mode == "saveimage":
            save_images_like_comfyui(images, folder, "frame", 1, PROMPT, WORKFLOW)
        else:
            write_frames_with_marker(images, folder, "frame", prompt=PROMPT, extra_pnginfo=WORKFLOW, workers=threads)
    print(json.dumps({"before": before, "peak": _rss_mib(), "threads": threads}))


def bench_memory(frames: int, height: int, width: int) -> None:
    print(f"peak RSS while saving {frames} frames {width}x{height} (each in a fresh process, frames already loaded):")
    for mode, label in (
        ("saveimage", "SaveImage sequential loop"),
        ("ours", f"WriteDoneMarker, this host ({os.cpu_count()} cores)"),
        ("ours-64", "WriteDoneMarker, 64 cores, pool capped by frame size"),
        ("ours-64-uncapped", "WriteDoneMarker, 64 cores, one thread per core (before)"),
    ):
        command = [sys.executable, __file__, "--memory-child", mode, "--frames", str(frames)]
        command += ["--height", str(height), "--width", str(width)]
        out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=1800).stdout
        r = json.loads(out.strip().splitlines()[-1])
        grown = r["peak"] - r["before"]
        print(f"  {label:<58} {r['threads']:>3} thread(s): peak {r['peak']:7.0f} MiB (+{grown:5.0f} MiB while saving)")


def bench_marker_commit(samples: int) -> None:
    with tempfile.TemporaryDirectory(dir=".") as d:
        files = [MarkedFile(f"frame_{i:05}_.png", 500_000) for i in range(81)]
        times = []
        for _ in range(samples):
            body = build_marker(files, source="node", prefix="frame", subfolder="", width=832, height=480)
            t0 = time.perf_counter()
            commit_marker(Path(d) / "frame.done", body)
            times.append(time.perf_counter() - t0)
    times.sort()
    print(
        f"marker commit (81 files listed, {samples} samples): p50 {1000 * times[len(times) // 2]:.2f} ms, "
        f"p99 {1000 * times[int(len(times) * 0.99) - 1]:.2f} ms"
    )


def bench_notification(samples: int) -> None:
    latencies = []
    images = np.zeros((2, 8, 8, 3), dtype=np.float32)
    with tempfile.TemporaryDirectory(dir=".") as d:
        for i in range(samples):
            folder = Path(d) / f"s{i}"
            folder.mkdir()

            def writer(folder: Path = folder) -> None:
                time.sleep(0.02)
                write_frames_with_marker(images, folder, "frame", context=SceneContext(prompt_id="p"))

            with RenameClock() as clock:
                thread = threading.Thread(target=writer)
                thread.start()
                wait_for_done(folder / "frame.done", 10, poll_interval=5.0)
                woke = time.perf_counter()
                thread.join()
            assert clock.before is not None, "the marker was never renamed into place"
            latencies.append(woke - clock.before)
    latencies.sort()
    p50 = 1000 * latencies[len(latencies) // 2]
    p99 = 1000 * latencies[max(0, int(len(latencies) * 0.99) - 1)]
    print(
        f"wait_for_done notification (watchdog events, 5 s poll fallback, {samples} samples): "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, min {1000 * latencies[0]:.2f} ms, max {1000 * latencies[-1]:.2f} ms "
        "from the rename (target p99 <= 50 ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--memory-width", type=int, default=1920)
    parser.add_argument("--memory-height", type=int, default=1080)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.frames, args.height, args.width)
        return
    logging.getLogger("watchdog").setLevel(logging.ERROR)
    bench_save(video_like_frames(args.frames, args.height, args.width), args.repeats)
    bench_memory(args.frames, args.memory_height, args.memory_width)
    bench_marker_commit(args.samples)
    bench_notification(args.samples)


if __name__ == "__main__":
    main()
