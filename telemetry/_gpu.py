"""GPU and host-memory snapshots from a fallback chain of probes that never raises.

Node side (inside ComfyUI, :func:`take_snapshot`): NVML (``nvidia-ml-py``) →
``amdsmi`` → torch on ComfyUI's device (CUDA/ROCm ``mem_get_info``, XPU, MPS) →
a CPU-only record. The CLI side (``comfy_api/gpu_remote.py``) builds the same snapshot
from ``/system_stats``, this module's NVML tier and ``nvidia-smi``.

Every tier that does not answer adds ``"<tier>: <reason>"`` to ``FallbackNotes``;
the snapshot names the tier that answered (``Source``) and what its used-memory
figure measures (``VramBasis``): ``device`` = device-wide used memory (total −
free, other processes included) or ``process`` = torch memory of this process.
Torch's per-process figures (``Torch``) are recorded beside the device figures
whenever torch has an initialised accelerator. Memory is MiB, ``round(bytes /
1048576)``.

The parts: ``_gpu_model`` (shape, units, device selection), ``_host_ram`` (RAM per OS),
``_gpu_probes`` (the tiers), ``_gpu_fields`` (contract-field merging); this module runs the
chain. ComfyUI's device comes in as a :class:`DeviceHint` from the caller (the node reads it
through ``nodes/_comfy.py``); nothing here imports ComfyUI, and nothing runs at import.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from . import _gpu_probes
from ._gpu_fields import gpu_contract_fields
from ._gpu_model import (
    AFTER_LABEL,
    BEFORE_LABEL,
    DEVICE_TYPES,
    MIB,
    SOURCES,
    DeviceHint,
    Reading,
    build_snapshot,
    device_block,
    device_entry,
    mib,
    normalise_uuid,
    select_device,
)
from ._gpu_probes import (
    cpu_reading,
    hint_from_torch_device,
    loaded_torch_hint,
    probe_amdsmi,
    probe_nvml,
    probe_torch,
    reset_probe_state,
    reset_torch_peaks,
    torch_memory,
)
from ._host_ram import ram_block, ram_sample

__all__ = [
    "AFTER_LABEL",
    "BEFORE_LABEL",
    "DEVICE_TYPES",
    "MIB",
    "SOURCES",
    "DeviceHint",
    "Reading",
    "build_snapshot",
    "cpu_reading",
    "device_block",
    "device_entry",
    "gpu_contract_fields",
    "hint_from_torch_device",
    "loaded_torch_hint",
    "mib",
    "node_tiers",
    "normalise_uuid",
    "probe_amdsmi",
    "probe_nvml",
    "probe_torch",
    "ram_block",
    "ram_sample",
    "reset_probe_state",
    "reset_torch_peaks",
    "run_probe",
    "run_tiers",
    "select_device",
    "take_snapshot",
    "torch_memory",
]

logger = logging.getLogger(__name__)

_NVML = _gpu_probes._NVML
"""The process-wide NVML session (``_device_now`` reads every device through it)."""

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
        result = run_probe(name, probe, hint)
        if isinstance(result, Reading):
            return result
        notes.append(f"{name}: {result}")
    return None


def run_probe(name: str, probe: Callable[[DeviceHint | None], Reading | str], hint: DeviceHint | None) -> Reading | str:
    """Run one probe; whatever it raises becomes its reason (a probe never raises)."""
    try:
        return probe(hint)
    except Exception as exc:  # vendor bindings raise anything (ctypes, OSError, own types): record, fall back
        logger.debug("%s probe failed", name, exc_info=True)
        return f"{type(exc).__name__}: {exc}"


def take_snapshot(label: str, hint: DeviceHint | None = None, hint_note: str | None = None) -> dict[str, Any]:
    """Node-side snapshot: NVML → amdsmi → torch (*hint*: ComfyUI's device) → CPU record. Never raises.

    Without a *hint* (outside ComfyUI) this process's initialised CUDA device is used, if any;
    *hint_note* is why the caller could not tell the device (kept as the first fallback note).
    """
    notes: list[str] = []
    if hint_note:
        notes.append(hint_note)
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
