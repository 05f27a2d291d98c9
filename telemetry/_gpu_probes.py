"""The device probes, each a tier that returns a :class:`Reading` or the reason it could not.

NVML (``nvidia-ml-py``: one ``nvmlInit`` per process, re-initialised after a device error such as
"GPU is lost"), ``amdsmi``, torch on the hinted device (CUDA/ROCm ``mem_get_info``, XPU, MPS) and the
CPU-only record. ``pynvml``, ``amdsmi`` and ``torch`` are imported inside the probes (torch only when
this process already loaded it): nothing runs at import.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from ._gpu_model import DeviceHint, Reading, as_text, device_block, device_entry, hint_text, mib, select_device

logger = logging.getLogger(__name__)


def loaded_torch_hint() -> DeviceHint | None:
    """Outside ComfyUI: this process's initialised CUDA device, if torch is already loaded.

    torch is never imported here just to probe (seconds), and CUDA is never
    initialised (that would allocate a context and change the numbers we measure).
    """
    torch = sys.modules.get("torch")
    if torch is None or not _cuda_initialised(torch):
        return None
    return hint_from_torch_device("cuda", int(torch.cuda.current_device()))


def hint_from_torch_device(type_: str, index: int | None) -> DeviceHint:
    """The hint for a torch device ``(type, index)``: ROCm told apart from CUDA, the UUID when CUDA is up."""
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
            return f"device {hint_text(hint)} is not among the {len(self.devices)} NVML device(s)"
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
            return f"device {hint_text(hint)} is not among the {len(devices)} amdsmi device(s)"
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


def reset_torch_peaks(hint: DeviceHint | None) -> str | None:
    """Reset torch's peak counters on *hint*'s device (ComfyUI's) so the next peaks are per scene.

    Returns None on success or when there is nothing to reset (no device hint, no CUDA/XPU
    torch device), else the reason as a note.
    """
    if hint is None:
        return None
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
