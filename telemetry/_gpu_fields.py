"""The contract's ``GPU`` and ``System`` objects merged from a 'before' and an 'after' snapshot."""

from __future__ import annotations

from typing import Any

from ._gpu_model import normalise_uuid


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
