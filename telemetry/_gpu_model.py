"""The GPU snapshot's shape: units, the device hint, one tier's reading, and which device is ComfyUI's."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._meta import iso_utc, utc_now

MIB = 1048576
"""Bytes per MiB; every 'MB' in the contract is a MiB."""

SOURCES = ("nvml", "amdsmi", "torch", "nvidia-smi", "system_stats", "cpu", "none")
DEVICE_TYPES = ("cuda", "xpu", "mps", "rocm", "cpu", "unknown")
BEFORE_LABEL = "before"
AFTER_LABEL = "after"


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


def hint_text(hint: DeviceHint | None) -> str:
    if hint is None:
        return "0"
    return f"{hint.type}:{hint.index if hint.index is not None else 0}"
