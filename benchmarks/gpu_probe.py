"""Cost of one GPU snapshot per probe tier, side by side.

    .venv/bin/python benchmarks/gpu_probe.py [--runs N]

Target (issue 3): NVML tier ≤ 1 ms per snapshot and ≥ 30× cheaper than the
nvidia-smi tier. Every row says whether it measured the real thing or a stand-in:

- ``nvml``: real when a driver answers; otherwise the real failure path
  (first call: import + dlopen attempt; later calls: the cached reason) and, as
  a separate row, this package's code over an in-process fake ``pynvml``
  (no driver calls, so a lower bound of the real tier).
- ``nvidia-smi``: the real binary when on PATH, else a fake shell script printing
  real CSV output: that row measures process start-up only, a lower bound of the
  real tool (which also loads NVML: typically 30-300 ms).
- ``system_stats``: one GET to a loopback server replying with the recorded
  ComfyUI 0.8.0 reply (HTTP and parsing; a real server adds its own work).
- ``cpu``: the full node-side chain as it runs on this machine.

Then the peak-memory sampler (issue 12; target ≤ 1 % of a core): the real
sampler thread at its default 10 Hz, its CPU time (``time.thread_time``) over
the wall time, with real NVML when a driver answers, a fake ``pynvml`` (this
package's code only) and RSS alone (a CPU device).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from scene_telemetry.comfy_api import gpu_remote
from scene_telemetry.telemetry import _gpu, _peak

SHARED = Path(__file__).resolve().parents[1] / "tests" / "data" / "comfyui-0.8.0" / "transcripts" / "system_stats.json"
RTX_4090_TOTAL = 25757220864


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    """Seconds per call, *runs* calls."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def row(name: str, mode: str, samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "tier": name,
        "mode": mode,
        "runs": len(samples),
        "median_us": statistics.median(ordered) * 1e6,
        "p95_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1e6,
    }


def fake_pynvml() -> types.ModuleType:
    """An in-process pynvml answering like one RTX 4090 (this package's overhead only)."""
    import pynvml

    mod = types.ModuleType("pynvml")
    for name in dir(pynvml):
        if name.startswith("NVMLError"):
            setattr(mod, name, getattr(pynvml, name))
    memory = types.SimpleNamespace(total=RTX_4090_TOTAL, free=22000 * 1048576)
    mod.nvmlInit = lambda: None  # type: ignore[attr-defined]
    mod.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: 1  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda h: b"NVIDIA GeForce RTX 4090"  # type: ignore[attr-defined]
    mod.nvmlDeviceGetUUID = lambda h: b"GPU-5c6a8a49-8c5e-2f4b-0f4a-1f8e2f3d9b71"  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = lambda h: memory  # type: ignore[attr-defined]
    mod.nvmlSystemGetDriverVersion = lambda: b"550.54.14"  # type: ignore[attr-defined]
    return mod


def measure_nvml(runs: int) -> list[dict[str, Any]]:
    _gpu.reset_probe_state()
    first = timed(lambda: _gpu.probe_nvml(None), 1)
    answer = _gpu.probe_nvml(None)
    rows = []
    if isinstance(answer, _gpu.Reading):
        rows.append(row("nvml", "real driver, first call (nvmlInit)", first))
        rows.append(row("nvml", "real driver, per snapshot", timed(lambda: _gpu.take_snapshot("b"), runs)))
    else:
        rows.append(row("nvml", f"real, no driver: first call ({answer})", first))
        rows.append(
            row("nvml", "real, no driver: later calls (cached reason)", timed(lambda: _gpu.probe_nvml(None), runs))
        )
    real = sys.modules.get("pynvml")
    sys.modules["pynvml"] = fake_pynvml()
    try:
        _gpu.reset_probe_state()
        _gpu.probe_nvml(None)
        rows.append(
            row("nvml", "FAKE pynvml: our code only (lower bound)", timed(lambda: _gpu.take_snapshot("b"), runs))
        )
    finally:
        if real is None:
            sys.modules.pop("pynvml", None)
        else:
            sys.modules["pynvml"] = real
        _gpu.reset_probe_state()
    return rows


def measure_nvidia_smi(runs: int) -> dict[str, Any]:
    if shutil.which("nvidia-smi"):
        return row("nvidia-smi", "real binary", timed(gpu_remote.probe_nvidia_smi, runs))
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "nvidia-smi"
        script.write_text("#!/bin/sh\necho '0, GPU-5c6a8a49, 550.54.14, 24564, 22000, NVIDIA GeForce RTX 4090'\n")
        script.chmod(0o755)
        old_path = os.environ["PATH"]
        os.environ["PATH"] = f"{tmp}{os.pathsep}{old_path}"
        try:
            rows, reason = gpu_remote.probe_nvidia_smi()
            assert rows is not None, reason
            return row(
                "nvidia-smi", "FAKE script: spawn + parse only (lower bound)", timed(gpu_remote.probe_nvidia_smi, runs)
            )
        finally:
            os.environ["PATH"] = old_path


def measure_system_stats(runs: int) -> dict[str, Any]:
    payload = SHARED.read_bytes() if SHARED.is_file() else json.dumps({"system": {}, "devices": []}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        samples = timed(
            lambda: gpu_remote.snapshot_from_system_stats("b", gpu_remote.probe_system_stats(url)[0] or {}), runs
        )
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()
    return row("system_stats", "loopback server, recorded reply", samples)


def sample_for(seconds: float, read_vram: Callable[[], int | None] | None, source: str) -> _peak.PeakResult:
    """Run the real peak sampler (default 10 Hz) for *seconds* and return its result (thread CPU time included)."""
    sampler = _peak.PeakSampler(prompt_id="bench", read_vram=read_vram, read_rss=_peak.process_rss_bytes, source=source)
    sampler.start()
    time.sleep(seconds)
    return sampler.stop()


def measure_peak_sampling(seconds: float) -> list[tuple[str, _peak.PeakResult]]:
    """Sampling cost as % of one core: the sampler thread's CPU time over the wall time it ran."""
    results = []
    _gpu.reset_probe_state()
    source, reader, note = _peak.vram_reader(None)
    if reader is not None:
        results.append((f"real {source} + RSS", sample_for(seconds, reader, source)))
    real = sys.modules.get("pynvml")
    sys.modules["pynvml"] = fake_pynvml()
    try:
        _gpu.reset_probe_state()
        source, reader, _ = _peak.vram_reader(None)
        results.append(("FAKE pynvml + RSS: our code only (lower bound)", sample_for(seconds, reader, source)))
    finally:
        if real is None:
            sys.modules.pop("pynvml", None)
        else:
            sys.modules["pynvml"] = real
        _gpu.reset_probe_state()
    results.append(("CPU device: RSS only (real)", sample_for(seconds, None, "none")))
    return results


def print_peak_sampling(seconds: float) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nPeak sampler cost (target ≤ 1 % of a core; {seconds:g} s each; load average {load:.2f})")
    print(f"{'mode':<52} {'Hz':>6} {'samples':>8} {'CPU ms':>8} {'% core':>7}")
    for mode, result in measure_peak_sampling(seconds):
        share = 100 * result.cpu_s / result.wall_s if result.wall_s else float("nan")
        rate = result.samples / result.wall_s if result.wall_s else float("nan")
        print(f"{mode[:52]:<52} {rate:>6.1f} {result.samples:>8} {result.cpu_s * 1000:>8.2f} {share:>7.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--peak-seconds", type=float, default=3.0, help="how long each peak-sampler row samples")
    args = parser.parse_args()
    smi_runs = max(10, args.runs // 10)
    rows = measure_nvml(args.runs)
    _gpu.reset_probe_state()
    _gpu.take_snapshot("warm-up")
    rows.append(row("cpu", "full node chain on this machine (real)", timed(lambda: _gpu.take_snapshot("b"), args.runs)))
    rows.append(row("ram", "ram_sample() alone (real)", timed(_gpu.ram_sample, args.runs)))
    rows.append(measure_system_stats(smi_runs))
    rows.append(measure_nvidia_smi(smi_runs))
    smi = rows[-1]["median_us"]
    gpu_note = (
        "an NVIDIA driver answered" if any(r["mode"].startswith("real driver") for r in rows) else "NO GPU/driver here"
    )
    print(f"GPU probe cost per snapshot ({gpu_note}; python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    print(f"{'tier':<13} {'mode':<52} {'runs':>5} {'median µs':>11} {'p95 µs':>10} {'× vs smi':>9}")
    for r in rows:
        ratio = smi / r["median_us"] if r["median_us"] else float("inf")
        figures = f"{r['runs']:>5} {r['median_us']:>11.1f} {r['p95_us']:>10.1f} {ratio:>9.1f}"
        print(f"{r['tier']:<13} {r['mode'][:52]:<52} {figures}")
    print_peak_sampling(args.peak_seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
