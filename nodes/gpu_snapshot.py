"""GPUTelemetrySnapshot: a pass-through that records the GPU (or CPU) state where it sits."""

from __future__ import annotations

import logging
from typing import Any

from ..telemetry import finish_peak_sampling, start_peak_sampling
from ..telemetry._gpu import BEFORE_LABEL, reset_torch_peaks, take_snapshot
from . import _comfy
from ._names import CATEGORY, display_name, node_id

AFTER_LABEL = "after"

logger = logging.getLogger(__name__)


class GPUTelemetrySnapshot:
    """Returns its input unchanged plus a GPU_SNAPSHOT; the wiring decides when it runs."""

    NAME = node_id("GPUSnapshot")
    DISPLAY_NAME = display_name("GPU Telemetry Snapshot")
    CATEGORY = CATEGORY
    FUNCTION = "snapshot"
    RETURN_TYPES = ("*", "GPU_SNAPSHOT")
    RETURN_NAMES = ("value", "snapshot")
    OUTPUT_TOOLTIPS = (
        "The input, unchanged: wire it on to the next node so this snapshot runs in between.",
        "Device, memory and probe tier at this point; wire 'before' and 'after' into Scene Telemetry Collector.",
    )
    DESCRIPTION = (
        "Records the compute device's memory (NVML → amdsmi → torch → CPU record, the tier used and why "
        "better ones did not answer) and host RAM. Place one between the model loader and the sampler "
        "(label 'before': also resets torch's peak counters and starts the peak-memory sampler) and one after "
        "VAE decode (label 'after': stops it and records the peak)."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "value": ("*", {"tooltip": "Anything (model, latent, images): passed through unchanged."}),
                "label": (
                    "STRING",
                    {"default": BEFORE_LABEL, "tooltip": "'before', 'after' or free text, kept in the snapshot."},
                ),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> float:
        # NaN never equals itself: a cached snapshot would replay an old measurement.
        return float("nan")

    def snapshot(self, value: Any, label: str) -> dict[str, Any]:
        label = label.strip()
        notes: list[str] = []
        prompt_id, _node = _comfy.executing_context()
        if label.lower() == BEFORE_LABEL:
            reset_note = reset_torch_peaks()
            if reset_note:
                notes.append(reset_note)
            # The sampler's thread has no executing context: the prompt id is read here and passed on.
            notes += start_peak_sampling(prompt_id, ended=lambda: _comfy.prompt_end_reason(prompt_id))
        snap = take_snapshot(label)
        if label.lower() == AFTER_LABEL:
            peak = finish_peak_sampling(prompt_id)
            if peak is not None:
                snap["Peak"] = peak
                if peak["Note"]:
                    notes.append(peak["Note"])
        snap["FallbackNotes"] = notes + snap["FallbackNotes"]
        logger.debug("GPU snapshot %s: %s", label, ui_line(snap))
        return {"ui": {"text": [ui_line(snap)]}, "result": (value, snap)}


def ui_line(snap: dict[str, Any]) -> str:
    """One line for the node face: label, device, used/total, tier."""
    device = snap["Device"]
    where = device["Type"] if device["Index"] is None else f"{device['Type']}:{device['Index']}"
    name = "" if device["Name"] == device["Type"] else f" {device['Name']}"
    if device["VramUsedMB"] is not None and device["VramTotalMB"] is not None:
        memory = f"{device['VramUsedMB']}/{device['VramTotalMB']} MiB used ({snap['VramBasis']})"
    elif snap["Ram"] is not None:
        memory = f"RAM {snap['Ram']['RamUsedMB']}/{snap['Ram']['RamTotalMB']} MiB used"
    else:
        memory = "memory unknown"
    fallbacks = len(snap["FallbackNotes"])
    tail = f", {fallbacks} fallback note(s)" if fallbacks else ""
    return f"{snap['Label']}: {where}{name} · {memory}{_peak_text(snap.get('Peak'))} · via {snap['Source']}{tail}"


def _peak_text(peak: dict[str, Any] | None) -> str:
    """' · peak 17210 MiB VRAM, 3120 MiB RSS (412 samples)' on an 'after' snapshot with a sampler result."""
    if not peak or peak["Samples"] is None:
        return " · peak unknown" if peak else ""
    parts = [f"{peak[key]} MiB {what}" for key, what in (("VramPeakMB", "VRAM"), ("RssPeakMB", "RSS")) if peak[key]]
    return f" · peak {', '.join(parts) or 'unknown'} ({peak['Samples']} samples)"
