"""What a GPU snapshot placed in a graph does with its label, and its one-line description.

'before' resets torch's peak counters on ComfyUI's device and starts the peak-memory sampler;
'after' stops it and records the peak. Any other label is a plain snapshot. The node
(``nodes/gpu_snapshot.py``) and ``scene-telemetry gpu`` print :func:`ui_line`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._gpu import AFTER_LABEL, BEFORE_LABEL, DeviceHint, reset_torch_peaks, take_snapshot
from ._peak import finish_peak_sampling, start_peak_sampling


def scene_snapshot(
    label: str,
    *,
    prompt_id: str | None,
    hint: DeviceHint | None = None,
    hint_note: str | None = None,
    ended: Callable[[], str | None] | None = None,
) -> dict[str, Any]:
    """A snapshot labelled *label*, with the 'before'/'after' peak handling; never raises.

    *hint*/*hint_note*: ComfyUI's device, or why it could not be told (see :func:`take_snapshot`).
    *ended* tells the peak sampler when *prompt_id* stopped running without an 'after'.
    """
    label = label.strip()
    notes: list[str] = []
    if label.lower() == BEFORE_LABEL:
        reset_note = reset_torch_peaks(hint) if hint is not None else hint_note
        if reset_note:
            notes.append(reset_note)
        # The sampler's thread has no executing context: the prompt id is read by the caller and passed on.
        notes += start_peak_sampling(prompt_id, hint=hint, ended=ended)
    snap = take_snapshot(label, hint, hint_note)
    if label.lower() == AFTER_LABEL:
        peak = finish_peak_sampling(prompt_id)
        if peak is not None:
            snap["Peak"] = peak
            if peak["Note"]:
                notes.append(peak["Note"])
    snap["FallbackNotes"] = notes + snap["FallbackNotes"]
    return snap


def ui_line(snap: dict[str, Any]) -> str:
    """One line for the node face and the ``gpu`` command: label, device, used/total, tier."""
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
