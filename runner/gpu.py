"""GPU snapshots around a scene whose graph has no collector, taken from the server side.

Each takes at most ``gpu_snapshot_allowance_s``: one ``/system_stats`` try through its own
short-timeout client, then the local NVML / ``nvidia-smi`` fallback with what is left
(:func:`comfy_api.gpu_remote.take_bounded_snapshot`). A wedged server or driver becomes a
``FallbackNotes`` line, never a hang.
"""

from __future__ import annotations

import logging
from typing import Any

from ..comfy_api.client import ComfyClient
from .options import RunOptions

logger = logging.getLogger(__name__)


def server_gpu_snapshot(client: ComfyClient, options: RunOptions, label: str) -> dict[str, Any] | None:
    """A server-side snapshot labelled *label* (``before``/``after``), or None when snapshots are off."""
    if not options.gpu_snapshots:
        return None
    try:
        from ..comfy_api.gpu_remote import BOUNDED_STATS_TIMEOUT_S, take_bounded_snapshot
    except ImportError:  # the remote probe is optional: the GPU block then says Source "none"
        logger.debug("comfy_api.gpu_remote unavailable; no server-side GPU snapshot")
        return None
    allowance = options.gpu_snapshot_allowance_s
    stats_client = ComfyClient(client.base_url, request_timeout_s=min(BOUNDED_STATS_TIMEOUT_S, allowance))
    snapshot: dict[str, Any] = take_bounded_snapshot(
        label, lambda timeout_s: stats_client.system_stats(timeout_s=timeout_s), allowance_s=allowance
    )
    return snapshot
