"""GPU and host-memory snapshots from a fallback chain of probes that never raises.

Node side (inside ComfyUI, :func:`take_snapshot`): NVML (``nvidia-ml-py``) →
``amdsmi`` → torch on ComfyUI's device (CUDA/ROCm ``mem_get_info``, XPU, MPS) →
a CPU-only record. The CLI side (``cli/gpu_remote.py``) builds the same snapshot
from ``/system_stats``, this module's NVML tier and ``nvidia-smi``.

Every tier that does not answer adds ``"<tier>: <reason>"`` to ``FallbackNotes``;
the snapshot names the tier that answered (``Source``) and what its used-memory
figure measures (``VramBasis``): ``device`` = device-wide used memory (total −
free, other processes included) or ``process`` = torch memory of this process.
Torch's per-process figures (``Torch``) are recorded beside the device figures
whenever torch has an initialised accelerator. Memory is MiB, ``round(bytes /
1048576)``.

Nothing here runs at import: ``pynvml``, ``amdsmi``, ``torch`` and
``comfy.model_management`` are imported inside the probes. NVML is initialised
once per process (that call costs milliseconds; a snapshot after it costs tens
of microseconds) and re-initialised after a device error such as "GPU is lost".
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._meta import iso_utc, utc_now

logger = logging.getLogger(__name__)

MIB = 1048576
"""Bytes per MiB; every 'MB' in the contract is a MiB."""

SOURCES = ("nvml", "amdsmi", "torch", "nvidia-smi", "system_stats", "cpu", "none")
DEVICE_TYPES = ("cuda", "xpu", "mps", "rocm", "cpu", "unknown")
BEFORE_LABEL = "before"


def mib(n_bytes: float | None) -> int | None:
    """Bytes → whole MiB (``round``, never negative); None stays None."""
    if n_bytes is None:
        return None
    return max(0, round(n_bytes / MIB))


def as_text(value: Any) -> str:
    """NVML/amdsmi strings: older bindings return bytes, newer ones str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip("\x00").strip()
    return str(value).strip()


@dataclass(frozen=True)
class DeviceHint:
    """The device ComfyUI (or this process's torch) computes on."""

    type: str
    index: int | None = None
    uuid: str | None = None


@dataclass(frozen=True)
class Reading:
    """What one tier measured; :func:`build_snapshot` turns it into the snapshot dict."""

    source: str
    basis: str
    device: dict[str, Any]
    devices: list[dict[str, Any]] = field(default_factory=list)
    torch: dict[str, Any] | None = None
    ram: dict[str, int] | None = None


def device_block(
    name: str,
    type_: str,
    index: int | None,
    *,
    uuid: str | None = None,
    driver: str | None = None,
    total_mb: int | None = None,
    used_mb: int | None = None,
    free_mb: int | None = None,
) -> dict[str, Any]:
    """The snapshot's ``Device`` object (MiB values already rounded)."""
    return {
        "Name": name,
        "Type": type_ if type_ in DEVICE_TYPES else "unknown",
        "Index": index,
        "Uuid": uuid,
        "DriverVersion": driver,
        "VramTotalMB": total_mb,
        "VramUsedMB": used_mb,
        "VramFreeMB": free_mb,
    }


def device_entry(index: int | None, name: str, uuid: str | None, total_mb: int | None) -> dict[str, Any]:
    """One item of the snapshot's ``Devices`` list (the contract's ``Device``)."""
    return {"Index": index, "Name": name, "Uuid": uuid, "VramTotal": total_mb}


def build_snapshot(
    label: str, reading: Reading | None, notes: Sequence[str], ram: dict[str, int] | None
) -> dict[str, Any]:
    """The ``GPU_SNAPSHOT`` value: a JSON-serialisable dict of one fixed shape."""
    if reading is None:
        reading = Reading("none", "none", device_block("unknown", "unknown", None))
    return {
        "Label": label,
        "TakenAt": iso_utc(utc_now()),
        "MonotonicS": time.monotonic(),
        "Source": reading.source,
        "VramBasis": reading.basis,
        "Device": dict(reading.device),
        "Torch": reading.torch,
        "Devices": [dict(d) for d in reading.devices],
        "Ram": reading.ram if reading.ram is not None else ram,
        "FallbackNotes": list(notes),
    }


# --- host RAM -------------------------------------------------------------------------------------


def ram_sample() -> dict[str, int] | None:
    """Host RAM now (MiB): /proc/meminfo (MemAvailable), else sysconf, else Windows; None if unknown."""
    for reader in (_ram_from_meminfo, _ram_from_sysconf, _ram_from_windows):
        try:
            sample = reader()
        except (OSError, ValueError, AttributeError) as exc:
            logger.debug("RAM reader %s failed: %s", reader.__name__, exc)
            continue
        if sample is not None:
            return sample
    return None


def ram_block(total_bytes: int, free_bytes: int) -> dict[str, int]:
    """The contract's ``RamSample`` from bytes (used = total − free, computed in MiB)."""
    total = mib(total_bytes) or 0
    free = min(mib(free_bytes) or 0, total)
    return {"RamTotalMB": total, "RamFreeMB": free, "RamUsedMB": total - free}


MEMINFO_PATH = "/proc/meminfo"


def _ram_from_meminfo() -> dict[str, int] | None:
    fields: dict[str, int] = {}
    with open(MEMINFO_PATH, encoding="ascii") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                fields[key] = int(parts[0]) * 1024  # meminfo's "kB" are KiB
    free = fields.get("MemAvailable", fields.get("MemFree"))
    if "MemTotal" not in fields or free is None:
        return None
    return ram_block(fields["MemTotal"], free)


def _ram_from_sysconf() -> dict[str, int] | None:
    if not hasattr(os, "sysconf"):
        return None
    page = os.sysconf("SC_PAGE_SIZE")
    return ram_block(page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES"))


def _ram_from_windows() -> dict[str, int] | None:
    if sys.platform != "win32":
        return None
    import ctypes

    class _MemoryStatusEx(ctypes.Structure):
        _fields_ = [
            ("dwLength", ctypes.c_ulong),
            ("dwMemoryLoad", ctypes.c_ulong),
            ("ullTotalPhys", ctypes.c_ulonglong),
            ("ullAvailPhys", ctypes.c_ulonglong),
            ("ullTotalPageFile", ctypes.c_ulonglong),
            ("ullAvailPageFile", ctypes.c_ulonglong),
            ("ullTotalVirtual", ctypes.c_ulonglong),
            ("ullAvailVirtual", ctypes.c_ulonglong),
            ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
        ]

    status = _MemoryStatusEx()
    status.dwLength = ctypes.sizeof(_MemoryStatusEx)
    kernel32 = getattr(ctypes, "windll").kernel32  # noqa: B009 - windll exists only on Windows
    if not kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        return None
    return ram_block(int(status.ullTotalPhys), int(status.ullAvailPhys))


# --- which device -------------------------------------------------------------------------------


def normalise_uuid(uuid: str | None) -> str | None:
    """'GPU-6a4b…' and torch's bare '6a4b…' compare equal."""
    if not uuid:
        return None
    text = uuid.strip().lower()
    return text[4:] if text.startswith("gpu-") else text


def select_device(devices: Sequence[dict[str, Any]], hint: DeviceHint | None) -> int | None:
    """Position in *devices* (``Index``/``Uuid`` entries) of the device ComfyUI computes on.

    By UUID when torch told us one; else through ``CUDA_VISIBLE_DEVICES`` (ComfyUI's
    ``--cuda-device`` sets it; NVML and nvidia-smi ignore it); else by index. None
    when the hinted device is not in the list.
    """
    wanted = normalise_uuid(hint.uuid) if hint else None
    if wanted:
        for pos, dev in enumerate(devices):
            if normalise_uuid(dev.get("Uuid")) == wanted:
                return pos
    cuda_index = hint.index if hint and hint.index is not None else 0
    visible = [e.strip() for e in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if e.strip()]
    if visible and cuda_index < len(visible):
        entry = visible[cuda_index]
        if entry.lower().startswith("gpu-"):
            prefix = normalise_uuid(entry) or ""
            matches = [p for p, d in enumerate(devices) if (normalise_uuid(d.get("Uuid")) or "").startswith(prefix)]
            return matches[0] if len(matches) == 1 else None
        if entry.isdigit():
            cuda_index = int(entry)
    for pos, dev in enumerate(devices):
        if dev.get("Index") == cuda_index:
            return pos
    return None


def comfy_device_hint() -> tuple[DeviceHint | None, str | None]:
    """ComfyUI's compute device (``get_torch_device()``), or (None, None) outside ComfyUI.

    ComfyUI imports ``comfy.model_management`` before it loads any custom node, so
    "already imported" is the test for "under ComfyUI": a dictionary lookup instead
    of a failed import (a sys.path scan) on every snapshot outside ComfyUI.
    """
    mm = sys.modules.get("comfy.model_management")
    if mm is None:
        return None, None
    try:
        device = mm.get_torch_device()
        return _hint_from_torch_device(str(device.type), device.index), None
    except Exception as exc:  # ComfyUI internals vary by version; a failed lookup must not break the probe
        return None, f"comfy: get_torch_device failed: {exc}"


def loaded_torch_hint() -> DeviceHint | None:
    """Outside ComfyUI: this process's initialised CUDA device, if torch is already loaded.

    torch is never imported here just to probe (seconds), and CUDA is never
    initialised (that would allocate a context and change the numbers we measure).
    """
    torch = sys.modules.get("torch")
    if torch is None or not _cuda_initialised(torch):
        return None
    return _hint_from_torch_device("cuda", int(torch.cuda.current_device()))


def _hint_from_torch_device(type_: str, index: int | None) -> DeviceHint:
    torch = sys.modules.get("torch")
    if type_ != "cuda" or torch is None:
        return DeviceHint(type_, index)
    if index is None:
        index = int(torch.cuda.current_device())
    kind = "rocm" if getattr(torch.version, "hip", None) else "cuda"
    uuid = None
    if _cuda_initialised(torch):
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return DeviceHint(kind, index, None if uuid is None else str(uuid))


def _cuda_initialised(torch: Any) -> bool:
    cuda = getattr(torch, "cuda", None)
    return bool(cuda is not None and cuda.is_initialized())


# --- NVML -------------------------------------------------------------------------------------------


class _NvmlSession:
    """Process-wide NVML state: one ``nvmlInit``, static device facts cached, reset on device errors."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ready = False
        self.permanent: str | None = None  # library/driver missing: no point retrying every snapshot
        self.devices: list[dict[str, Any]] | None = None
        self.driver: str | None = None

    def forget(self) -> None:
        """Drop everything (tests; a process whose driver was installed meanwhile)."""
        self.ready = False
        self.permanent = None
        self.devices = None
        self.driver = None

    def read(self, hint: DeviceHint | None) -> Reading | str:
        if self.permanent is not None:
            return self.permanent
        try:
            import pynvml
        except ImportError as exc:
            self.permanent = f"nvidia-ml-py is not installed ({exc})"
            return self.permanent
        try:
            return self._read(pynvml, hint)
        except pynvml.NVMLError as exc:
            reason = as_text(str(exc))
            missing = (pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded)
            if isinstance(exc, missing):
                self.permanent = reason
            else:  # GPU lost, unknown error…: start afresh next time
                self._shutdown(pynvml)
            return reason

    def _read(self, pynvml: Any, hint: DeviceHint | None) -> Reading | str:
        if not self.ready:
            pynvml.nvmlInit()
            self.ready = True
        if self.devices is None:
            self.driver = _nvml_optional(pynvml, pynvml.nvmlSystemGetDriverVersion)
            self.devices = [_nvml_static(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())]
        if not self.devices:
            return "no NVIDIA device"
        pos = select_device(self.devices, hint)
        if pos is None:
            return f"device {_hint_text(hint)} is not among the {len(self.devices)} NVML device(s)"
        static = self.devices[pos]
        memory = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(static["Index"]))
        total, free = int(memory.total), int(memory.free)
        device = device_block(
            static["Name"],
            "cuda",
            static["Index"],
            uuid=static["Uuid"],
            driver=self.driver,
            total_mb=mib(total),
            used_mb=mib(max(total - free, 0)),
            free_mb=mib(free),
        )
        return Reading("nvml", "device", device, [dict(d) for d in self.devices])

    def _shutdown(self, pynvml: Any) -> None:
        if self.ready:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError as exc:
                logger.debug("nvmlShutdown failed: %s", exc)
        self.ready = False
        self.devices = None


def _nvml_optional(pynvml: Any, call: Callable[..., Any], *args: Any) -> str | None:
    """A descriptive field some platforms lack (WSL, vGPU): None instead of failing the tier."""
    try:
        return as_text(call(*args))
    except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound):
        return None


def _nvml_static(pynvml: Any, index: int) -> dict[str, Any]:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    name = _nvml_optional(pynvml, pynvml.nvmlDeviceGetName, handle) or "NVIDIA GPU"
    uuid = _nvml_optional(pynvml, pynvml.nvmlDeviceGetUUID, handle)
    total = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
    return device_entry(index, name, uuid, mib(total))


_NVML = _NvmlSession()


def probe_nvml(hint: DeviceHint | None = None) -> Reading | str:
    """The NVML tier: device-wide memory of the hinted device (also used by the CLI)."""
    with _NVML.lock:
        return _NVML.read(hint)


def reset_probe_state() -> None:
    """Forget the cached NVML session (tests, or after installing a driver)."""
    with _NVML.lock:
        _NVML.forget()


# --- amdsmi -----------------------------------------------------------------------------------------


def probe_amdsmi(hint: DeviceHint | None = None) -> Reading | str:
    """The AMD tier through ``amdsmi`` (optional; needs ROCm's native library)."""
    try:
        import amdsmi
    except ImportError as exc:
        return f"amdsmi is not installed ({exc})"
    amdsmi.amdsmi_init()
    try:
        handles = list(amdsmi.amdsmi_get_processor_handles())
        if not handles:
            return "no AMD device"
        devices = [_amd_static(amdsmi, i, h) for i, h in enumerate(handles)]
        pos = select_device(devices, DeviceHint("rocm", hint.index) if hint else None)
        if pos is None:
            return f"device {_hint_text(hint)} is not among the {len(devices)} amdsmi device(s)"
        usage = amdsmi.amdsmi_get_gpu_vram_usage(handles[pos])  # MiB, as torch.cuda reads it
        total, used = int(usage["vram_total"]), int(usage["vram_used"])
        driver = as_text(amdsmi.amdsmi_get_gpu_driver_info(handles[pos]).get("driver_version", "")) or None
        entry = devices[pos]
        device = device_block(
            entry["Name"],
            "rocm",
            entry["Index"],
            uuid=entry["Uuid"],
            driver=driver,
            total_mb=total,
            used_mb=used,
            free_mb=max(total - used, 0),
        )
        return Reading("amdsmi", "device", device, devices)
    finally:
        amdsmi.amdsmi_shut_down()


def _amd_static(amdsmi: Any, index: int, handle: Any) -> dict[str, Any]:
    name = as_text(amdsmi.amdsmi_get_gpu_asic_info(handle).get("market_name", "")) or "AMD GPU"
    uuid = as_text(amdsmi.amdsmi_get_gpu_device_uuid(handle)) or None
    total = int(amdsmi.amdsmi_get_gpu_vram_usage(handle)["vram_total"])
    return device_entry(index, name, uuid, total)


# --- torch ------------------------------------------------------------------------------------------


def torch_memory(hint: DeviceHint | None) -> dict[str, int | None] | None:
    """This process's torch memory on the hinted device (per-process), or None."""
    torch = sys.modules.get("torch")
    if torch is None or hint is None:
        return None
    if hint.type in ("cuda", "rocm") and _cuda_initialised(torch):
        return _torch_stats(torch.cuda, hint.index)
    if hint.type == "xpu" and hasattr(torch, "xpu") and torch.xpu.is_initialized():
        return _torch_stats(torch.xpu, hint.index)
    if hint.type == "mps" and hasattr(torch, "mps"):
        return {
            "AllocatedMB": mib(torch.mps.current_allocated_memory()),
            "ReservedMB": mib(torch.mps.driver_allocated_memory()),
            "PeakAllocatedMB": None,
            "PeakReservedMB": None,
        }
    return None


def _torch_stats(backend: Any, index: int | None) -> dict[str, int | None]:
    index = backend.current_device() if index is None else index
    return {
        "AllocatedMB": mib(backend.memory_allocated(index)),
        "ReservedMB": mib(backend.memory_reserved(index)),
        "PeakAllocatedMB": mib(backend.max_memory_allocated(index)),
        "PeakReservedMB": mib(backend.max_memory_reserved(index)),
    }


def reset_torch_peaks() -> str | None:
    """Reset torch's peak counters on ComfyUI's device so the next peaks are per scene.

    Returns None on success or when there is nothing to reset (no ComfyUI, no CUDA/XPU
    torch device), else the reason as a note.
    """
    hint, note = comfy_device_hint()
    if hint is None:
        return note
    torch = sys.modules.get("torch")
    try:
        if hint.type in ("cuda", "rocm") and torch is not None and _cuda_initialised(torch):
            torch.cuda.reset_peak_memory_stats(hint.index)
        elif hint.type == "xpu" and torch is not None and torch.xpu.is_initialized():
            torch.xpu.reset_peak_memory_stats(hint.index)
    except Exception as exc:  # a failed reset only makes peaks span more than one scene
        return f"torch: reset_peak_memory_stats failed: {exc}"
    return None


def probe_torch(hint: DeviceHint | None) -> Reading | str:
    """The torch tier: ComfyUI's device through torch's own memory queries."""
    torch = sys.modules.get("torch")
    if hint is None or torch is None:
        return "not under ComfyUI and this process has no initialised torch accelerator"
    if hint.type in ("cuda", "rocm"):
        return _torch_cuda(torch, hint)
    if hint.type == "xpu":
        return _torch_xpu(torch, hint)
    if hint.type == "mps":
        return _torch_mps(torch)
    return f"torch device type {hint.type!r} has no memory query"


def _torch_cuda(torch: Any, hint: DeviceHint) -> Reading:
    index = int(torch.cuda.current_device()) if hint.index is None else hint.index
    free, total = (int(v) for v in torch.cuda.mem_get_info(index))  # device-wide, like NVML
    devices = [
        device_entry(i, str(p.name), _torch_uuid(p, hint.type), mib(int(p.total_memory)))
        for i, p in ((i, torch.cuda.get_device_properties(i)) for i in range(torch.cuda.device_count()))
    ]
    device = device_block(
        str(torch.cuda.get_device_name(index)),
        hint.type,
        index,
        uuid=devices[index]["Uuid"] if index < len(devices) else None,
        total_mb=mib(total),
        used_mb=mib(max(total - free, 0)),
        free_mb=mib(free),
    )
    return Reading("torch", "device", device, devices)


def _torch_uuid(props: Any, type_: str) -> str | None:
    uuid = getattr(props, "uuid", None)
    if uuid is None:
        return None
    return f"GPU-{uuid}" if type_ == "cuda" else str(uuid)


def _torch_xpu(torch: Any, hint: DeviceHint) -> Reading:
    index = int(torch.xpu.current_device()) if hint.index is None else hint.index
    props = torch.xpu.get_device_properties(index)
    if hasattr(torch.xpu, "mem_get_info"):
        free, total = (int(v) for v in torch.xpu.mem_get_info(index))
        basis, used = "device", max(total - free, 0)
    else:  # older torch: only this process's reservation is known
        total, used = int(props.total_memory), int(torch.xpu.memory_reserved(index))
        basis, free = "process", max(total - used, 0)
    device = device_block(str(props.name), "xpu", index, total_mb=mib(total), used_mb=mib(used), free_mb=mib(free))
    return Reading("torch", basis, device, [device_entry(index, str(props.name), None, mib(total))])


def _torch_mps(torch: Any) -> Reading:
    """Apple unified memory: Metal's recommended working set and this process's driver allocation."""
    total = int(torch.mps.recommended_max_memory())
    used = int(torch.mps.driver_allocated_memory())
    device = device_block(
        "Apple MPS", "mps", 0, total_mb=mib(total), used_mb=mib(used), free_mb=mib(max(total - used, 0))
    )
    return Reading("torch", "process", device, [device_entry(0, "Apple MPS", None, mib(total))])


def cpu_reading() -> Reading:
    """The last node-side tier: no accelerator figures, host RAM only."""
    return Reading("cpu", "none", device_block("cpu", "cpu", None))


# --- the chain ------------------------------------------------------------------------------------


Tier = tuple[str, Callable[[DeviceHint | None], Reading | str]]


def node_tiers(hint: DeviceHint | None) -> list[Tier]:
    """Tiers worth asking for this device: NVML only for NVIDIA, amdsmi only for AMD."""
    kind = hint.type if hint else None
    tiers: list[Tier] = []
    if kind in (None, "cuda"):
        tiers.append(("nvml", probe_nvml))
    if kind in (None, "rocm"):
        tiers.append(("amdsmi", probe_amdsmi))
    if kind not in ("cpu",):
        tiers.append(("torch", probe_torch))
    return tiers


def run_tiers(tiers: Sequence[Tier], hint: DeviceHint | None, notes: list[str]) -> Reading | None:
    """Ask each tier in turn; append ``'<tier>: <reason>'`` for each that does not answer."""
    for name, probe in tiers:
        result = attempt(name, probe, hint)
        if isinstance(result, Reading):
            return result
        notes.append(f"{name}: {result}")
    return None


def attempt(name: str, probe: Callable[[DeviceHint | None], Reading | str], hint: DeviceHint | None) -> Reading | str:
    """Run one probe; whatever it raises becomes its reason (a probe never raises)."""
    try:
        return probe(hint)
    except Exception as exc:  # vendor bindings raise anything (ctypes, OSError, own types): record, fall back
        logger.debug("%s probe failed", name, exc_info=True)
        return f"{type(exc).__name__}: {exc}"


def take_snapshot(label: str) -> dict[str, Any]:
    """Node-side snapshot: NVML → amdsmi → torch (ComfyUI's device) → CPU record. Never raises."""
    notes: list[str] = []
    hint, note = comfy_device_hint()
    if note:
        notes.append(note)
    if hint is None:
        hint = loaded_torch_hint()
    reading = run_tiers(node_tiers(hint), hint, notes) or cpu_reading()
    if reading.torch is None and reading.source != "cpu":
        torch_figures = _safe_torch_memory(hint, notes)
        if torch_figures is not None:
            reading = Reading(reading.source, reading.basis, reading.device, reading.devices, torch_figures)
    return build_snapshot(label, reading, notes, ram_sample())


def _safe_torch_memory(hint: DeviceHint | None, notes: list[str]) -> dict[str, int | None] | None:
    try:
        return torch_memory(hint)
    except Exception as exc:  # torch figures are extras; their failure must not lose the snapshot
        notes.append(f"torch: memory stats failed: {exc}")
        return None


def _hint_text(hint: DeviceHint | None) -> str:
    if hint is None:
        return "0"
    return f"{hint.type}:{hint.index if hint.index is not None else 0}"


# --- contract fields ------------------------------------------------------------------------------


def gpu_contract_fields(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The contract's ``GPU`` and ``System`` objects from a before and an after snapshot.

    Identity, total, Source and VramBasis come from *after* (else *before*);
    ``VramDeltaMB`` is after − before of the rounded MiB values. When the two
    snapshots measured different devices or on different bases, the 'before'
    figures are dropped (a delta across them means nothing) and a note says why.
    """
    main = after if after is not None else before
    notes = _merged_notes(before, after)
    if main is None:
        notes.append("gpu: no snapshot was wired")
        gpu, system = _empty_gpu(), {"FallbackNotes": notes, "Before": None, "After": None}
        _add_peaks(gpu, system, None)
        return gpu, system
    device = main["Device"]
    before_used, before_free = _used_free(before)
    after_used, after_free = _used_free(after)
    if before is not None and after is not None:
        mismatch = _mismatch(before, after)
        if mismatch:
            notes.append(f"gpu: {mismatch}; VramBeforeMB/VramFreeBefore dropped")
            before_used = before_free = None
    torch_after = (after or {}).get("Torch") or {}
    gpu = {
        "Name": device["Name"],
        "Type": device["Type"],
        "Index": device["Index"],
        "Uuid": device["Uuid"],
        "DriverVersion": device["DriverVersion"],
        "Source": main["Source"],
        "VramBasis": main["VramBasis"],
        "VramTotal": device["VramTotalMB"],
        "VramBeforeMB": before_used,
        "VramAfterMB": after_used,
        "VramDeltaMB": None if before_used is None or after_used is None else after_used - before_used,
        "VramFreeBefore": before_free,
        "VramFreeAfter": after_free,
        "TorchPeakAllocatedMB": torch_after.get("PeakAllocatedMB"),
        "TorchPeakReservedMB": torch_after.get("PeakReservedMB"),
        "Devices": [dict(d) for d in main["Devices"]],
    }
    system = {
        "FallbackNotes": notes,
        "Before": before.get("Ram") if before else None,
        "After": after.get("Ram") if after else None,
    }
    _add_peaks(gpu, system, (after or {}).get("Peak"))
    return gpu, system


def _add_peaks(gpu: dict[str, Any], system: dict[str, Any], peak: dict[str, Any] | None) -> None:
    """Contract 1.1: the sampler's peaks (``Peak`` of the 'after' snapshot, see ``_peak.py``); null without one."""
    peak = peak or {}
    gpu["VramPeakMB"] = peak.get("VramPeakMB")
    gpu["VramPeakSamples"] = peak.get("Samples")
    gpu["VramPeakIntervalS"] = peak.get("IntervalS")
    system["RssPeakMB"] = peak.get("RssPeakMB")


def _used_free(snapshot: dict[str, Any] | None) -> tuple[int | None, int | None]:
    if snapshot is None or snapshot["VramBasis"] == "none":
        return None, None
    return snapshot["Device"]["VramUsedMB"], snapshot["Device"]["VramFreeMB"]


def _mismatch(before: dict[str, Any], after: dict[str, Any]) -> str | None:
    if before["VramBasis"] != after["VramBasis"]:
        return f"VramBasis changed from {before['VramBasis']} ({before['Source']}) to {after['VramBasis']}"
    a, b = before["Device"], after["Device"]
    if a["Uuid"] and b["Uuid"]:
        if normalise_uuid(a["Uuid"]) != normalise_uuid(b["Uuid"]):
            return f"before measured {a['Uuid']}, after {b['Uuid']}"
    elif a["Index"] != b["Index"] or a["Type"] != b["Type"]:
        return f"before measured {a['Type']}:{a['Index']}, after {b['Type']}:{b['Index']}"
    return None


def _merged_notes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    merged: list[str] = []
    for snapshot in (before, after):
        for note in (snapshot or {}).get("FallbackNotes", []):
            if note not in merged:
                merged.append(note)
    return merged


def _empty_gpu() -> dict[str, Any]:
    return {
        "Name": "unknown",
        "Type": "unknown",
        "Index": None,
        "Uuid": None,
        "DriverVersion": None,
        "Source": "none",
        "VramBasis": "none",
        "VramTotal": None,
        "VramBeforeMB": None,
        "VramAfterMB": None,
        "VramDeltaMB": None,
        "VramFreeBefore": None,
        "VramFreeAfter": None,
        "TorchPeakAllocatedMB": None,
        "TorchPeakReservedMB": None,
        "Devices": [],
    }
