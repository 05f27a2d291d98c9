"""How the runner reaches the server and where it writes; the per-scene budget that follows from it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from .policy import QueuePolicy

STATE_FILE = ".runner-state.json"
COLLECTOR_METADATA = "artifact-metadata.json"

FORCED_QUIET_PERIOD_S = 2.0
"""Frames whose sizes do not change for this long are taken as complete (seed: 'stable' copy)."""
MARKER_POLL_INTERVAL_S = 0.5
"""Polling fallback for a local marker (file events usually wake the wait first) and /view polling."""
SUBMIT_TRIES = 3
"""POST /prompt attempts when the reply is lost (timeout/5xx); the same prompt_id keeps it idempotent."""
GPU_SNAPSHOT_ALLOWANCE_S = 3.0
"""Per GPU snapshot (before and after a scene): one /system_stats try of at most 2 s, then the local
NVML / nvidia-smi fallback with what is left (comfy_api.gpu_remote.take_bounded_snapshot)."""
ABANDON_TIMEOUT_S = 5.0
"""Per request when stopping an abandoned prompt; a server that cannot answer that fast is noted, not awaited."""
SIDE_REQUEST_TIMEOUT_S = 5.0
"""Whole-request bound of the requests outside an attempt: the collector metadata beside remote frames, and
(all look-ups together) finding a scene's prompt again on ``--resume``."""
_PROMPT_NAMESPACE = uuid.UUID("6c1f3a52-7f37-4d6a-9a55-2f4f8d1f0b6e")
"""uuid5 namespace of the runner's prompt ids (any fixed UUID: ids must only be stable across resumes)."""


@dataclass(frozen=True)
class RunOptions:
    """How the runner reaches the server and where it writes."""

    server: str
    run_dir: Path
    policy: QueuePolicy
    run_id: str
    comfy_output_dir: Path | None = None
    """ComfyUI's output folder when it is on this machine (markers waited for with file events)."""
    resume: bool = False
    forced_quiet_period_s: float = FORCED_QUIET_PERIOD_S
    marker_poll_interval_s: float = MARKER_POLL_INTERVAL_S
    gpu_snapshots: bool = True
    """Take /system_stats GPU snapshots around scenes whose graph has no collector."""
    gpu_snapshot_allowance_s: float = GPU_SNAPSHOT_ALLOWANCE_S
    """The most each of those snapshots may take (a wedged server or driver becomes a FallbackNotes line)."""
    comfyui_version: str | None = None
    server_grace_s: float = 60.0
    """How long refused connections may last (a restart) before the server counts as lost."""


def scene_worst_case_s(options: RunOptions) -> float:
    """The longest one scene can take (plus a few scheduling milliseconds per request).

    Each attempt ends within ``max_wait + post_execution`` of its start; a scene makes at most
    ``1 + scene_retry_budget`` attempts. After the last one it either stops an abandoned prompt (maxWait,
    attemptLimit: two requests of ABANDON_TIMEOUT_S) or, on success, waits for the marker
    (``post_execution``) and may force one (quiet period; remote: the /view copies get another
    ``post_execution`` and the collector metadata SIDE_REQUEST_TIMEOUT_S). GPU snapshots add up to two
    allowances, ``--resume`` one look-up bound.
    """
    policy = options.policy
    attempts = (1 + policy.scene_retry_budget) * (policy.max_wait_seconds + policy.post_execution_timeout_seconds)
    marker = policy.post_execution_timeout_seconds + options.forced_quiet_period_s
    if options.comfy_output_dir is None:
        marker += policy.post_execution_timeout_seconds + SIDE_REQUEST_TIMEOUT_S
    after = max(2 * ABANDON_TIMEOUT_S, marker)
    gpu = 2 * options.gpu_snapshot_allowance_s if options.gpu_snapshots else 0.0
    resume = SIDE_REQUEST_TIMEOUT_S if options.resume else 0.0
    return attempts + after + gpu + resume


def prompt_id_for(run_id: str, scene_id: str, attempt: int) -> str:
    """Deterministic prompt id of one submission: the same run, scene and attempt give the same id."""
    return str(uuid.uuid5(_PROMPT_NAMESPACE, f"{run_id}/{scene_id}/{attempt}"))
