"""GPU snapshots from outside ComfyUI, for the headless runner and ``scene-telemetry gpu``.

Chain: the server's ``GET /system_stats`` (3 tries, 500 ms apart) → NVML on this
machine (``telemetry.probe_nvml``) → ``nvidia-smi --query-gpu`` → ``none``.
The result has exactly the node-side snapshot shape (``telemetry.take_snapshot``), so the
contract fields are computed the same way.

This module lives in ``comfy_api/`` (pip only, not in the registry archive) because it opens HTTP connections and runs a
subprocess, both of which the Comfy Registry scan flags in node code.

``/system_stats`` figures (ComfyUI 0.8.0, comfyui-facts §3.4): ``vram_free`` is
device free **plus** torch's reserved-but-unused bytes, ``torch_vram_total`` is
torch's reservation. Device-wide free is therefore ``vram_free −
torch_vram_free`` (what NVML and ``torch.cuda.mem_get_info`` report), and used is
total − that. A CPU server (``--cpu``, MPS) reports RAM in all four fields: it is
recorded as Type ``cpu`` with VramBasis ``none`` and the RAM as ``Ram``.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from ..telemetry import (
    DEVICE_TYPES,
    ClientError,
    InvalidInputError,
    Reading,
    build_snapshot,
    device_block,
    device_entry,
    mib,
    probe_nvml,
    ram_block,
    ram_sample,
    run_probe,
    select_device,
)
from ._limits import ReplyTooLarge, read_capped
from .client import loads_reply
from .server_url import parse_server_url

logger = logging.getLogger(__name__)

SYSTEM_STATS_TRIES = 3  # as the seed: a server busy loading a model answers on the second or third try
SYSTEM_STATS_DELAY_S = 0.5  # pause between tries (the seed's 500 ms)
SYSTEM_STATS_TIMEOUT_S = 5.0  # per request; /system_stats is cheap, 5 s means a wedged server (comfy-cli probe)
NVIDIA_SMI_TIMEOUT_S = 10.0  # nvidia-smi answers in 50-300 ms; 10 s means a hung driver (GPU off the bus)
BOUNDED_STATS_TIMEOUT_S = 2.0
"""The runner's per-scene /system_stats: one try, this long at most (a healthy server answers in ms)."""
BOUNDED_SNAPSHOT_ALLOWANCE_S = 3.0
"""The most one runner snapshot may take, every tier together: /system_stats, then the local NVML /
nvidia-smi fallback with whatever is left. A snapshot must never delay a scene by more than this."""
_MAX_STATS_BYTES = 1024 * 1024  # a /system_stats reply is under 1 KiB per device
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Direct connections, as :class:`comfy_api.client.ComfyClient`: a proxy would turn "refused" into a 502."""
_KILL_WAIT_S = 2.0  # after killing a timed-out nvidia-smi, how long to wait for its pipes to close

NVIDIA_SMI_FIELDS = ("index", "uuid", "driver_version", "memory.total", "memory.free", "name")
"""Queried columns; ``name`` last so a name containing a comma cannot shift the others."""
_NOT_AVAILABLE = {"[n/a]", "n/a", "[not supported]", "[unknown error]", "[insufficient permissions]", ""}
_CUDA_NAME = re.compile(r"^(?:cuda|xpu):\d+ (?P<name>.+?)(?: : \S+)?$")


# --- /system_stats --------------------------------------------------------------------------------


def probe_system_stats(
    base_url: str,
    *,
    tries: int = SYSTEM_STATS_TRIES,
    delay_s: float = SYSTEM_STATS_DELAY_S,
    timeout_s: float = SYSTEM_STATS_TIMEOUT_S,
) -> tuple[dict[str, Any] | None, list[str]]:
    """``GET <base_url>/system_stats``: (reply, []) or (None, [note]).

    Connection errors, timeouts and 5xx are retried; a 4xx or a body that is not a
    JSON object is final (asking again returns the same).
    """
    try:
        url = parse_server_url(base_url) + "/system_stats"
    except InvalidInputError as exc:
        return None, [f"system_stats: {exc}"]
    reason = "not tried"
    for attempt_no in range(1, tries + 1):
        reply, reason, retry = _get_json(url, timeout_s)
        if reply is not None:
            return reply, []
        logger.debug("system_stats try %d/%d: %s", attempt_no, tries, reason)
        if not retry:
            return None, [f"system_stats: {url}: {reason}"]
        if attempt_no < tries:
            time.sleep(delay_s)
    return None, [f"system_stats: {url}: {reason} ({tries} tries)"]


def _get_json(url: str, timeout_s: float) -> tuple[dict[str, Any] | None, str, bool]:
    """(reply, reason, worth retrying)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with _DIRECT.open(request, timeout=timeout_s) as response:
            body = read_capped(response, _MAX_STATS_BYTES)
    except ReplyTooLarge:
        return None, f"reply larger than {_MAX_STATS_BYTES} bytes", False
    except urllib.error.HTTPError as exc:
        return None, f"HTTP {exc.code} {exc.reason}", exc.code >= 500
    except urllib.error.URLError as exc:
        return None, str(exc.reason), True
    except (TimeoutError, OSError) as exc:
        return None, f"{type(exc).__name__}: {exc}", True
    try:
        reply = loads_reply(body)
    except ValueError as exc:
        return None, f"reply is not JSON ({exc})", False
    if not isinstance(reply, dict):
        return None, "reply is not a JSON object", False
    return reply, "", False


def parse_system_stats(reply: dict[str, Any]) -> Reading | str:
    """A reading from a ``/system_stats`` reply (its only device is ComfyUI's torch device)."""
    system = reply.get("system") or {}
    ram = _server_ram(system)
    devices = reply.get("devices") or []
    if not devices or not isinstance(devices[0], dict):
        return "reply lists no device"
    dev = devices[0]
    kind = str(dev.get("type", "unknown"))
    if kind == "cpu":
        return Reading("system_stats", "none", device_block("cpu", "cpu", None), [], None, ram)
    if kind == "cuda" and "rocm" in str(system.get("pytorch_version", "")):
        kind = "rocm"
    raw_name = str(dev.get("name", ""))
    match = _CUDA_NAME.match(raw_name)
    name = match.group("name") if match else raw_name
    index = dev.get("index") if isinstance(dev.get("index"), int) else None
    total, free = _int(dev.get("vram_total")), _int(dev.get("vram_free"))
    reserved, reserved_free = _int(dev.get("torch_vram_total")), _int(dev.get("torch_vram_free"))
    if total is None or free is None:
        return f"device {raw_name!r} has no vram_total/vram_free"
    device_free = max(free - (reserved_free or 0), 0)
    device = device_block(
        name,
        kind if kind in DEVICE_TYPES else "unknown",
        index,
        total_mb=mib(total),
        used_mb=mib(max(total - device_free, 0)),
        free_mb=mib(device_free),
    )
    torch = None
    if reserved is not None and reserved_free is not None:
        torch = {
            "AllocatedMB": mib(max(reserved - reserved_free, 0)),
            "ReservedMB": mib(reserved),
            "PeakAllocatedMB": None,
            "PeakReservedMB": None,
        }
    return Reading("system_stats", "device", device, [device_entry(index, name, None, mib(total))], torch, ram)


def _server_ram(system: dict[str, Any]) -> dict[str, int] | None:
    total, free = _int(system.get("ram_total")), _int(system.get("ram_free"))
    return None if total is None or free is None else ram_block(total, free)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def snapshot_from_system_stats(label: str, reply: dict[str, Any]) -> dict[str, Any]:
    """A snapshot from a ``/system_stats`` reply the caller already has (the runner's preflight)."""
    reading = run_probe("system_stats", lambda _hint: parse_system_stats(reply), None)
    if isinstance(reading, Reading):
        return build_snapshot(label, reading, [], None)
    return build_snapshot(label, None, [f"system_stats: {reading}"], None)


# --- nvidia-smi -----------------------------------------------------------------------------------


def probe_nvidia_smi(*, timeout_s: float = NVIDIA_SMI_TIMEOUT_S) -> tuple[list[dict[str, Any]] | None, str | None]:
    """Run ``nvidia-smi --query-gpu``: (one dict per GPU, None) or (None, reason).

    Each dict has ``Index``, ``Uuid``, ``DriverVersion``, ``TotalMB``, ``FreeMB``
    (MiB, as ``nounits`` prints them) and ``Name``; ``[N/A]``/``[Not Supported]`` → None.
    """
    command = ["nvidia-smi", f"--query-gpu={','.join(NVIDIA_SMI_FIELDS)}", "--format=csv,noheader,nounits"]
    try:
        code, out, err = _run(command, timeout_s)
    except FileNotFoundError:
        return None, "nvidia-smi is not on PATH"
    except subprocess.TimeoutExpired:
        return None, f"nvidia-smi did not answer within {timeout_s:g} s (killed)"
    except OSError as exc:
        return None, f"nvidia-smi could not run: {exc}"
    if code != 0:
        first = next((line.strip() for line in (out + "\n" + err).splitlines() if line.strip()), "")
        return None, f"nvidia-smi exited with {code}: {first}"
    rows: list[dict[str, Any]] = []
    for line in out.splitlines():
        if not line.strip():
            continue
        row = _parse_row(line)
        if row is None:
            return None, f"unparseable nvidia-smi line {line.strip()!r}"
        rows.append(row)
    return (rows, None) if rows else (None, "nvidia-smi listed no GPU")


def _run(command: list[str], timeout_s: float) -> tuple[int, str, str]:
    """Run without a shell; on timeout kill the whole process group so no child keeps the pipes open."""
    posix = os.name == "posix"
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=posix,
    ) as process:
        try:
            out, err = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill(process, posix)
            try:
                process.communicate(timeout=_KILL_WAIT_S)
            except subprocess.TimeoutExpired:
                logger.debug("nvidia-smi pipes still open after kill")
            raise
        return process.returncode, out, err


def _kill(process: subprocess.Popen[str], posix: bool) -> None:
    if posix and sys.platform != "win32":
        try:
            os.killpg(process.pid, signal.SIGKILL)
            return
        except ProcessLookupError:
            return
    process.kill()


def _parse_row(line: str) -> dict[str, Any] | None:
    parts = [p.strip() for p in line.split(",", len(NVIDIA_SMI_FIELDS) - 1)]
    if len(parts) != len(NVIDIA_SMI_FIELDS):
        return None
    index, uuid, driver, total, free, name = (None if p.lower() in _NOT_AVAILABLE else p for p in parts)
    if index is None or not index.isdigit():
        return None
    return {
        "Index": int(index),
        "Uuid": uuid,
        "DriverVersion": driver,
        "TotalMB": _mib_field(total),
        "FreeMB": _mib_field(free),
        "Name": name or "NVIDIA GPU",
    }


def _mib_field(text: str | None) -> int | None:
    try:
        return None if text is None else round(float(text))
    except ValueError:
        return None


def nvidia_smi_reading(rows: list[dict[str, Any]]) -> Reading | str:
    """The device ComfyUI would compute on (``CUDA_VISIBLE_DEVICES``, else 0) from nvidia-smi rows."""
    pos = select_device(rows, None)
    if pos is None:
        return f"the compute device is not among the {len(rows)} GPU(s) nvidia-smi lists"
    row = rows[pos]
    total, free = row["TotalMB"], row["FreeMB"]
    if total is None or free is None:
        return f"GPU {row['Index']} reports memory as [N/A]"
    device = device_block(
        row["Name"],
        "cuda",
        row["Index"],
        uuid=row["Uuid"],
        driver=row["DriverVersion"],
        total_mb=total,
        used_mb=max(total - free, 0),
        free_mb=free,
    )
    devices = [device_entry(r["Index"], r["Name"], r["Uuid"], r["TotalMB"]) for r in rows]
    return Reading("nvidia-smi", "device", device, devices)


def _nvidia_smi_tier(_hint: Any, timeout_s: float = NVIDIA_SMI_TIMEOUT_S) -> Reading | str:
    rows, reason = probe_nvidia_smi(timeout_s=timeout_s)
    return nvidia_smi_reading(rows) if rows is not None else (reason or "no answer")


# --- the chain ------------------------------------------------------------------------------------


def take_remote_snapshot(label: str, base_url: str | None) -> dict[str, Any]:
    """/system_stats (when *base_url*) → local NVML → nvidia-smi → ``none``. Never raises.

    ``Ram`` is the server's for ``system_stats`` and this machine's otherwise.
    """
    notes: list[str] = []
    if base_url:
        reply, stats_notes = probe_system_stats(base_url, tries=SYSTEM_STATS_TRIES, delay_s=SYSTEM_STATS_DELAY_S)
        notes.extend(stats_notes)
        if reply is not None:
            reading = run_probe("system_stats", lambda _hint: parse_system_stats(reply), None)
            if isinstance(reading, Reading):
                return build_snapshot(label, reading, notes, None)
            notes.append(f"system_stats: {reading}")
    else:
        notes.append("system_stats: no server URL given")
    return _local_tiers(label, notes, None)


def take_bounded_snapshot(
    label: str,
    system_stats: Callable[[float], dict[str, Any]],
    *,
    allowance_s: float = BOUNDED_SNAPSHOT_ALLOWANCE_S,
    stats_timeout_s: float = BOUNDED_STATS_TIMEOUT_S,
) -> dict[str, Any]:
    """The runner's snapshot around a scene: done within *allowance_s*, whatever the server does. Never raises.

    *system_stats(timeout_s)* is one ``GET /system_stats`` (the runner's client, whose timeout bounds the
    whole request); it is tried once, for at most *stats_timeout_s*. Then local NVML, then nvidia-smi with
    what is left of the allowance (skipped when nothing is). Each failure is a ``FallbackNotes`` line.
    """
    deadline = time.monotonic() + allowance_s
    notes: list[str] = []
    try:
        reply = system_stats(max(0.01, min(stats_timeout_s, allowance_s)))
    except ClientError as exc:
        notes.append(f"system_stats: {exc}")
    else:
        reading = run_probe("system_stats", lambda _hint: parse_system_stats(reply), None)
        if isinstance(reading, Reading):
            return build_snapshot(label, reading, notes, None)
        notes.append(f"system_stats: {reading}")
    return _local_tiers(label, notes, deadline)


def _local_tiers(label: str, notes: list[str], deadline: float | None) -> dict[str, Any]:
    """Local NVML → nvidia-smi → ``none``; with *deadline*, nvidia-smi gets only the time left."""
    result = run_probe("nvml", probe_nvml, None)
    if isinstance(result, Reading):
        return build_snapshot(label, result, notes, ram_sample())
    notes.append(f"nvml: {result}")
    left = NVIDIA_SMI_TIMEOUT_S if deadline is None else min(NVIDIA_SMI_TIMEOUT_S, deadline - time.monotonic())
    if left <= 0:
        notes.append("nvidia-smi: not run, the snapshot's time allowance is spent")
        return build_snapshot(label, None, notes, ram_sample())
    result = run_probe("nvidia-smi", lambda hint: _nvidia_smi_tier(hint, left), None)
    if isinstance(result, Reading):
        return build_snapshot(label, result, notes, ram_sample())
    notes.append(f"nvidia-smi: {result}")
    return build_snapshot(label, None, notes, ram_sample())
