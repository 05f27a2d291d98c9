"""CLI-side GPU snapshots: /system_stats over loopback, a fake nvidia-smi on PATH, the chain (comfy_api/gpu_remote)."""

from __future__ import annotations

import copy
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pynvml as real_pynvml
import pytest
from gpu_fakes import MIB, FakeNvml, rtx_4090
from jsonschema import Draft202012Validator
from scene_telemetry.cli.main import main
from scene_telemetry.comfy_api import gpu_remote
from scene_telemetry.comfy_api.gpu_remote import (
    parse_system_stats,
    probe_nvidia_smi,
    probe_system_stats,
    snapshot_from_system_stats,
    take_remote_snapshot,
)
from scene_telemetry.telemetry import _gpu
from scene_telemetry.telemetry._contract import load_schema
from scene_telemetry.telemetry._gpu import gpu_contract_fields

QUERY_ARG = "--query-gpu=index,uuid,driver_version,memory.total,memory.free,name"
FORMAT_ARG = "--format=csv,noheader,nounits"
UUID_0 = "GPU-5c6a8a49-8c5e-2f4b-0f4a-1f8e2f3d9b71"
UUID_1 = "GPU-9d0e1f2a-3b4c-5d6e-7f80-91a2b3c4d5e6"
DRIVER_FAILED = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)


@pytest.fixture(autouse=True)
def fresh_probes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Quick retries, no cached NVML session, no CUDA_VISIBLE_DEVICES from the environment."""
    _gpu.reset_probe_state()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(gpu_remote, "SYSTEM_STATS_DELAY_S", 0.02)
    yield
    _gpu.reset_probe_state()


# --- a loopback /system_stats ------------------------------------------------------------------------


class StatsServer:
    """HTTPServer on 127.0.0.1 replying with scripted (status, body) pairs; the last one repeats."""

    def __init__(self, replies: list[tuple[int, bytes]]) -> None:
        self.replies = replies
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.paths.append(self.path)
                status, body = outer.replies[min(len(outer.paths), len(outer.replies)) - 1]
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05})

    def __enter__(self) -> StatsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.thread.join(timeout=5)
        self.httpd.server_close()


def cpu_reply(recorded_dir: Path) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads((recorded_dir / "transcripts/system_stats.json").read_text())
    return reply


def cuda_reply(recorded_dir: Path) -> dict[str, Any]:
    """The recorded reply with a CUDA device in ComfyUI 0.8.0's shape (comfyui-facts §3.4).

    Device free 20000 MiB; torch reserved 4096 MiB of which 3072 MiB active, so
    torch_vram_free = 1024 MiB and vram_free = 20000 + 1024 MiB.
    """
    reply = copy.deepcopy(cpu_reply(recorded_dir))
    reply["system"]["pytorch_version"] = "2.9.1+cu128"
    reply["devices"] = [
        {
            "name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync",
            "type": "cuda",
            "index": 0,
            "vram_total": 25757220864,
            "vram_free": (20000 + 1024) * MIB,
            "torch_vram_total": 4096 * MIB,
            "torch_vram_free": 1024 * MIB,
        }
    ]
    return reply


def body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


def validate_gpu_and_system(gpu: dict[str, Any], system: dict[str, Any]) -> None:
    defs = load_schema("common")["$defs"]
    for name, obj in (("GPU", gpu), ("System", system)):
        errors = [e.message for e in Draft202012Validator({"$defs": defs, "$ref": f"#/$defs/{name}"}).iter_errors(obj)]
        assert errors == [], f"{name}: {errors}"


def test_cpu_server_reply_is_cpu_with_server_ram(recorded_dir: Path) -> None:
    with StatsServer([(200, body(cpu_reply(recorded_dir)))]) as server:
        snap = take_remote_snapshot("before", server.url + "/")
    assert server.paths == ["/system_stats"]
    assert (snap["Source"], snap["VramBasis"], snap["Device"]["Type"], snap["FallbackNotes"]) == (
        "system_stats",
        "none",
        "cpu",
        [],
    )
    assert snap["Device"]["VramTotalMB"] is None  # the cpu "vram" figures are RAM: not reported as VRAM
    # ram_total 25276510208 B = 24105.56 MiB, ram_free 20244500480 B = 19306.66 MiB
    assert snap["Ram"] == {"RamTotalMB": 24106, "RamFreeMB": 19307, "RamUsedMB": 24106 - 19307}


def test_cuda_reply_separates_device_free_from_torch_cache(recorded_dir: Path) -> None:
    reading = parse_system_stats(cuda_reply(recorded_dir))
    assert not isinstance(reading, str)
    assert reading.device == {
        "Name": "NVIDIA GeForce RTX 4090",
        "Type": "cuda",
        "Index": 0,
        "Uuid": None,
        "DriverVersion": None,
        "VramTotalMB": 24564,
        "VramUsedMB": 24564 - 20000,
        "VramFreeMB": 20000,
    }
    assert reading.torch == {"AllocatedMB": 3072, "ReservedMB": 4096, "PeakAllocatedMB": None, "PeakReservedMB": None}
    assert reading.devices == [{"Index": 0, "Name": "NVIDIA GeForce RTX 4090", "Uuid": None, "VramTotal": 24564}]


def test_rocm_build_is_recorded_as_rocm(recorded_dir: Path) -> None:
    reply = cuda_reply(recorded_dir)
    reply["system"]["pytorch_version"] = "2.9.1+rocm6.4"
    reply["devices"][0]["name"] = "cuda:0 AMD Instinct MI300X : native"
    reading = parse_system_stats(reply)
    assert not isinstance(reading, str)
    assert (reading.device["Type"], reading.device["Name"]) == ("rocm", "AMD Instinct MI300X")


def test_snapshots_from_server_give_valid_contract_fields(recorded_dir: Path) -> None:
    before = snapshot_from_system_stats("before", cuda_reply(recorded_dir))
    later = cuda_reply(recorded_dir)
    later["devices"][0]["vram_free"] = (12000 + 1024) * MIB
    after = snapshot_from_system_stats("after", later)
    gpu, system = gpu_contract_fields(before, after)
    validate_gpu_and_system(gpu, system)
    assert (gpu["VramBeforeMB"], gpu["VramAfterMB"], gpu["VramDeltaMB"]) == (4564, 12564, 8000)
    assert gpu["Source"] == "system_stats" and system["Before"]["RamTotalMB"] == 24106


def test_server_retries_5xx_then_answers(recorded_dir: Path) -> None:
    with StatsServer([(503, b"busy"), (200, body(cpu_reply(recorded_dir)))]) as server:
        reply, notes = probe_system_stats(server.url, delay_s=0.01)
    assert reply == cpu_reply(recorded_dir) and notes == [] and len(server.paths) == 2


def test_default_budget_is_three_tries_500_ms_apart() -> None:
    with StatsServer([(500, b"{}")]) as server:
        started = time.monotonic()
        reply, notes = probe_system_stats(server.url)
        elapsed = time.monotonic() - started
    assert reply is None and len(server.paths) == 3
    assert 1.0 <= elapsed < 3.0  # two 0.5 s pauses
    assert notes == [f"system_stats: {server.url}/system_stats: HTTP 500 Internal Server Error (3 tries)"]


@pytest.mark.parametrize(
    ("status", "payload", "reason"),
    [
        (404, b"404: Not Found", "HTTP 404 Not Found"),
        (200, b"<html>proxy</html>", "reply is not JSON"),
        (200, b"[1, 2]", "reply is not a JSON object"),
    ],
)
def test_final_answers_are_not_retried(status: int, payload: bytes, reason: str) -> None:
    with StatsServer([(status, payload)]) as server:
        reply, notes = probe_system_stats(server.url, delay_s=0.01)
    assert reply is None and len(server.paths) == 1
    assert notes[0].startswith(f"system_stats: {server.url}/system_stats: {reason}")


def test_refused_port_is_noted_after_three_tries() -> None:
    url = refused_url()
    reply, notes = probe_system_stats(url, delay_s=0.01)
    assert reply is None
    assert notes == [f"system_stats: {url}/system_stats: [Errno 111] Connection refused (3 tries)"]


# --- a fake nvidia-smi on PATH ------------------------------------------------------------------------


def install_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, script_body: str) -> Path:
    """Put an executable ``nvidia-smi`` first on PATH; it refuses arguments other than ours (exit 2)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" != "{QUERY_ARG}" ] || [ "$2" != "{FORMAT_ARG}" ] || [ "$#" -ne 2 ]; then\n'
        '  echo "bad arguments: $*"; exit 2\nfi\n' + script_body
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


ONE_GPU = f"echo '0, {UUID_0}, 550.54.14, 24564, 22000, NVIDIA GeForce RTX 4090'\n"
TWO_GPUS = (
    f"echo '0, {UUID_0}, 550.54.14, 24564, 22000, NVIDIA GeForce RTX 4090'\n"
    f"echo '1, {UUID_1}, 550.54.14, 81559, 70000, NVIDIA H100 80GB HBM3'\n"
)


def test_nvidia_smi_one_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_nvidia_smi(monkeypatch, tmp_path, ONE_GPU)
    rows, reason = probe_nvidia_smi(timeout_s=10)
    assert reason is None
    assert rows == [
        {
            "Index": 0,
            "Uuid": UUID_0,
            "DriverVersion": "550.54.14",
            "TotalMB": 24564,
            "FreeMB": 22000,
            "Name": "NVIDIA GeForce RTX 4090",
        }
    ]


def test_nvidia_smi_several_gpus_follow_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_nvidia_smi(monkeypatch, tmp_path, TWO_GPUS)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    snap = take_remote_snapshot("after", None)
    assert snap["Source"] == "nvidia-smi"
    assert (snap["Device"]["Name"], snap["Device"]["Uuid"], snap["Device"]["VramUsedMB"]) == (
        "NVIDIA H100 80GB HBM3",
        UUID_1,
        81559 - 70000,
    )
    assert [d["Uuid"] for d in snap["Devices"]] == [UUID_0, UUID_1]
    # This machine has no NVIDIA driver: the real NVML tier is tried first and says why it did not answer.
    assert snap["FallbackNotes"] == ["system_stats: no server URL given", "nvml: NVML Shared Library Not Found"]


def test_nvidia_smi_not_available_fields(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_nvidia_smi(
        monkeypatch,
        tmp_path,
        "echo '0, [N/A], [Not Supported], [N/A], [N/A], NVIDIA GeForce RTX 4090'\n",
    )
    rows, _ = probe_nvidia_smi(timeout_s=10)
    assert rows is not None and rows[0]["Uuid"] is None and rows[0]["TotalMB"] is None
    snap = take_remote_snapshot("x", None)
    assert snap["Source"] == "none"
    assert snap["FallbackNotes"][-1] == "nvidia-smi: GPU 0 reports memory as [N/A]"


def test_nvidia_smi_non_zero_exit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_nvidia_smi(monkeypatch, tmp_path, f'echo "{DRIVER_FAILED}"\nexit 9\n')
    rows, reason = probe_nvidia_smi(timeout_s=10)
    assert rows is None and reason == f"nvidia-smi exited with 9: {DRIVER_FAILED}"


def test_nvidia_smi_hang_is_killed_at_the_timeout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pid_file = tmp_path / "sleeper.pid"
    # The sleeper is a child of the script and holds the pipes: the whole group must die.
    install_nvidia_smi(monkeypatch, tmp_path, f"sleep 30 &\necho $! > {pid_file}\nwait\n")
    started = time.monotonic()
    rows, reason = probe_nvidia_smi(timeout_s=0.3)
    elapsed = time.monotonic() - started
    assert rows is None and reason == "nvidia-smi did not answer within 0.3 s (killed)"
    assert elapsed < 2.0
    assert not _running(int(pid_file.read_text()))


def _running(pid: int) -> bool:
    """True while *pid* exists and is not a zombie waiting for its (new) parent to reap it."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.02)
    return True


def test_nvidia_smi_not_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert probe_nvidia_smi(timeout_s=10) == (None, "nvidia-smi is not on PATH")


def test_nvidia_smi_garbage_is_a_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_nvidia_smi(monkeypatch, tmp_path, "echo 'Failed to initialize NVML: Driver/library version mismatch'\n")
    rows, reason = probe_nvidia_smi(timeout_s=10)
    assert rows is None and reason is not None and reason.startswith("unparseable nvidia-smi line")


# --- the chain ------------------------------------------------------------------------------------


def test_refused_server_falls_to_local_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([rtx_4090(free=22000 * MIB)]).module())
    url = refused_url()
    snap = take_remote_snapshot("before", url)
    assert snap["Source"] == "nvml" and snap["Device"]["VramUsedMB"] == 2564
    assert snap["FallbackNotes"] == [f"system_stats: {url}/system_stats: [Errno 111] Connection refused (3 tries)"]


def test_refused_server_falls_to_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_nvidia_smi(monkeypatch, tmp_path, ONE_GPU)
    url = refused_url()
    snap = take_remote_snapshot("before", url)
    assert (snap["Source"], snap["Device"]["VramFreeMB"], snap["Device"]["DriverVersion"]) == (
        "nvidia-smi",
        22000,
        "550.54.14",
    )
    assert [n.split(":")[0] for n in snap["FallbackNotes"]] == ["system_stats", "nvml"]


def test_nothing_answers_gives_none_that_still_validates(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(init_error=real_pynvml.NVMLError_DriverNotLoaded).module())
    before, after = take_remote_snapshot("before", refused_url()), take_remote_snapshot("after", None)
    assert after["Source"] == "none" and after["FallbackNotes"][1:] == [
        "nvml: Driver Not Loaded",
        "nvidia-smi: nvidia-smi is not on PATH",
    ]
    gpu, system = gpu_contract_fields(before, after)
    validate_gpu_and_system(gpu, system)
    assert gpu["Source"] == "none" and gpu["VramDeltaMB"] is None


def test_cmd_gpu_json(recorded_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with StatsServer([(200, body(cuda_reply(recorded_dir)))]) as server:
        code = main(["gpu", "--server", server.url, "--label", "probe", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["Label"] == "probe" and printed["Device"]["VramFreeMB"] == 20000


def test_cmd_gpu_text(recorded_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with StatsServer([(200, body(cuda_reply(recorded_dir)))]) as server:
        assert main(["gpu", "--server", server.url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "now: cuda:0 NVIDIA GeForce RTX 4090 · 4564/24564 MiB used (device) · via system_stats"
    assert lines[2] == "  torch (per process): AllocatedMB 3072, ReservedMB 4096"
