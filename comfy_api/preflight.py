"""Preflight: is the server there, does it have every node class, is there VRAM to spare?

Run before anything is queued. Each failure is one line and a distinct exit code
(see ``cli/cmd_run.py``); low free VRAM is only a warning, because a server that
offloads models still finishes, just slower.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..nodes._names import node_id
from ..telemetry import ClientError, Deadline

logger = logging.getLogger(__name__)

SYSTEM_STATS_TRIES = 3
SYSTEM_STATS_DELAY_S = 0.5
"""The issue's budget: 3 tries, 500 ms apart (a server that is still binding its port gets a second)."""
DEFAULT_PREFLIGHT_BUDGET_S = 15.0
"""All of preflight (every /system_stats try, /object_info) shares this deadline: a server that accepts TCP
and never answers ends preflight here, not after 3 x the 30 s request timeout (``--preflight-budget-seconds``)."""

DEFAULT_MIN_FREE_VRAM_MB = 2048
"""Below this much free VRAM a video model will offload or fail; warn (configurable, 0 = off)."""

PACK_CLASSES: tuple[str, ...] = (node_id("WriteDoneMarker"),)
"""This pack's classes the runner relies on, whether or not the workflow uses them (markers)."""

EXIT_SERVER_UNREACHABLE = 10
EXIT_NODES_MISSING = 11
EXIT_OBJECT_INFO_FAILED = 12

_MIB = 1024 * 1024


class PreflightClient(Protocol):
    """What preflight needs from :class:`comfy_api.client.ComfyClient`."""

    def system_stats(self, *, timeout_s: float | None = None) -> dict[str, Any]: ...

    def object_info(self, *, timeout_s: float | None = None) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PreflightFailure:
    """Why the run cannot start: a one-line reason and the exit code it maps to."""

    exit_code: int
    reason: str


@dataclass
class PreflightReport:
    """What preflight learnt; ``failure`` is None when the run may start."""

    system_stats: dict[str, Any] | None = None
    object_info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    failure: PreflightFailure | None = None
    system_stats_tries: int = 0

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def comfyui_version(self) -> str | None:
        version = ((self.system_stats or {}).get("system") or {}).get("comfyui_version")
        return str(version) if version is not None else None


def fetch_system_stats(
    client: PreflightClient,
    *,
    tries: int = SYSTEM_STATS_TRIES,
    delay_s: float = SYSTEM_STATS_DELAY_S,
    sleep: Callable[[float], None] = time.sleep,
    deadline: Deadline | None = None,
) -> tuple[dict[str, Any] | None, int, str | None]:
    """``/system_stats`` with retries, each within what is left of *deadline*.

    Returns (reply or None, tries used, last error).
    """
    last_error = None
    used = 0
    for attempt in range(1, tries + 1):
        if deadline is not None and deadline.expired():
            break
        used = attempt
        try:
            return client.system_stats(timeout_s=None if deadline is None else deadline.left()), attempt, None
        except ClientError as exc:
            last_error = str(exc)
            logger.debug("system_stats try %d/%d failed: %s", attempt, tries, exc)
        if attempt < tries:
            sleep(delay_s if deadline is None else min(delay_s, deadline.left()))
    return None, used, last_error


def missing_classes(object_info: dict[str, Any], required: Iterable[str]) -> list[str]:
    """Required classes the server does not list, sorted."""
    return sorted({c for c in required if c not in object_info})


def vram_warning(system_stats: dict[str, Any], min_free_mb: float) -> str | None:
    """A warning when the compute device has less than *min_free_mb* free (CPU devices: never)."""
    devices = system_stats.get("devices") or []
    if min_free_mb <= 0 or not devices or not isinstance(devices[0], dict):
        return None
    device = devices[0]
    if device.get("type") == "cpu":  # the figures are host RAM (comfyui-facts §3.4)
        return None
    free = device.get("vram_free")
    if not isinstance(free, (int, float)) or isinstance(free, bool):
        return None
    free_mb = free / _MIB
    if free_mb >= min_free_mb:
        return None
    return f"low VRAM: {free_mb:.0f} MiB free on {device.get('name', 'the device')} (threshold {min_free_mb:g} MiB)"


def run_preflight(
    client: PreflightClient,
    required: Iterable[str],
    *,
    server: str,
    min_free_vram_mb: float = DEFAULT_MIN_FREE_VRAM_MB,
    tries: int = SYSTEM_STATS_TRIES,
    delay_s: float = SYSTEM_STATS_DELAY_S,
    sleep: Callable[[float], None] = time.sleep,
    budget_s: float = DEFAULT_PREFLIGHT_BUDGET_S,
) -> PreflightReport:
    """Every preflight check, in order, all within *budget_s*; stops at the first failure."""
    report = PreflightReport()
    deadline = Deadline.after(budget_s)
    stats, used, last_error = fetch_system_stats(client, tries=tries, delay_s=delay_s, sleep=sleep, deadline=deadline)
    report.system_stats_tries = used
    if stats is None:
        within = f"within the {budget_s:g} s preflight budget" if deadline.expired() else f"after {used} tries"
        reason = f"server {server} did not answer /system_stats {within} ({used} tries): {last_error}"
        report.failure = PreflightFailure(EXIT_SERVER_UNREACHABLE, reason)
        return report
    report.system_stats = stats
    try:
        if deadline.expired():
            raise ClientError(f"no time left of the {budget_s:g} s preflight budget")
        report.object_info = client.object_info(timeout_s=deadline.left())
    except ClientError as exc:
        report.failure = PreflightFailure(EXIT_OBJECT_INFO_FAILED, f"server {server}: /object_info failed: {exc}")
        return report
    missing = missing_classes(report.object_info, [*required, *PACK_CLASSES])
    if missing:
        pack = [c for c in missing if c in PACK_CLASSES]
        hint = " (is the scene-telemetry pack installed in custom_nodes?)" if pack else ""
        report.failure = PreflightFailure(
            EXIT_NODES_MISSING, f"server {server} lacks node class(es): {', '.join(missing)}{hint}"
        )
        return report
    warning = vram_warning(stats, min_free_vram_mb)
    if warning:
        logger.warning("%s", warning)
        report.warnings.append(warning)
    return report
