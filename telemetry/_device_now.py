"""Used and total memory of each accelerator right now, for the metrics route's scrape."""

from __future__ import annotations

import logging
import sys
from typing import Any

from ._gpu import take_snapshot
from ._gpu_model import MIB, DeviceHint
from ._gpu_probes import _NVML

logger = logging.getLogger(__name__)


def device_memory_now(hint: DeviceHint | None = None, hint_note: str | None = None) -> list[dict[str, Any]]:
    """One row per device: ``index``, ``name``, ``uuid``, ``used_bytes``, ``total_bytes``, ``source``.

    NVML answers for every NVIDIA device (device-wide used memory); otherwise the
    snapshot chain's answer for ComfyUI's own device (amdsmi, torch). A CPU device
    gives no rows. *hint*: ComfyUI's device (see :func:`take_snapshot`). Never raises;
    costs about one GPU snapshot.
    """
    try:
        snap = take_snapshot("metrics", hint, hint_note)
    except Exception:  # a probe should never raise; a scrape must not fail if one does
        logger.debug("device memory probe failed", exc_info=True)
        return []
    if snap["Source"] == "nvml":
        rows = _nvml_all()
        if rows:
            return rows
    device = snap["Device"]
    if snap["VramBasis"] == "none" or device["VramTotalMB"] is None or device["VramUsedMB"] is None:
        return []
    return [
        {
            "index": device["Index"],
            "name": device["Name"],
            "uuid": device["Uuid"],
            "used_bytes": device["VramUsedMB"] * MIB,
            "total_bytes": device["VramTotalMB"] * MIB,
            "source": snap["Source"],
        }
    ]


def _nvml_all() -> list[dict[str, Any]]:
    """Every device of the (already initialised) NVML session, exact bytes."""
    pynvml = sys.modules.get("pynvml")
    session = _NVML
    if pynvml is None:
        return []
    rows = []
    with session.lock:
        if not session.ready:
            return []
        try:
            for entry in session.devices or []:
                memory = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(entry["Index"]))
                total, free = int(memory.total), int(memory.free)
                rows.append(
                    {
                        "index": entry["Index"],
                        "name": entry["Name"],
                        "uuid": entry["Uuid"],
                        "used_bytes": max(total - free, 0),
                        "total_bytes": total,
                        "source": "nvml",
                    }
                )
        except Exception:  # GPU lost between the snapshot and here: the snapshot's tier decides next time
            logger.debug("NVML per-device read failed", exc_info=True)
            return []
    return rows
