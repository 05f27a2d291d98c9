"""``scene-telemetry gpu``: print one GPU snapshot (server's /system_stats, local NVML, nvidia-smi)."""

from __future__ import annotations

import argparse
from typing import Any

from ._args import server_url
from ._console import emit, emit_json


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gpu",
        help="print a GPU snapshot: the server's /system_stats, else local NVML, else nvidia-smi",
        description="Print which device ComfyUI computes on, its memory and the tier that answered; "
        "each tier that did not answer is listed with its reason. Always exits 0 when a snapshot was taken "
        "(Source 'none' included).",
    )
    parser.add_argument(
        "--server", type=server_url, help="ComfyUI base URL, e.g. http://127.0.0.1:8188 (omit: local probes only)"
    )
    parser.add_argument("--label", default="now", help="label stored in the snapshot (default: now)")
    parser.add_argument("--json", action="store_true", help="print the snapshot as one JSON document")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..comfy_api.gpu_remote import take_remote_snapshot  # the HTTP client: imported by the command only
    from ..telemetry import ui_line

    snap = take_remote_snapshot(args.label, args.server)
    if args.json:
        emit_json(snap)
        return 0
    emit(ui_line(snap))
    for device in snap["Devices"]:
        emit(f"  device {device['Index']}: {device['Name']} {device['Uuid'] or ''} {device['VramTotal']} MiB".rstrip())
    if snap["Torch"]:
        emit("  torch (per process): " + ", ".join(f"{k} {v}" for k, v in snap["Torch"].items() if v is not None))
    for note in snap["FallbackNotes"]:
        emit(f"  fallback: {note}")
    return 0
