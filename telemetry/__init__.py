"""scene-telemetry's pure-Python library.

No ComfyUI, torch or GPU library is imported here and nothing runs at import
time; the node adapters in ``nodes/`` and every other package (``cli/``, ``runner/`` …) call
into these functions.

Importing this package is cheap: each public name is imported from its module on
first use (PEP 562 ``__getattr__`` over :data:`_MODULES`), so ``scene-telemetry
--help`` loads only what it touches. The same imports are repeated under
``TYPE_CHECKING`` for type checkers; tests/test_telemetry_api.py keeps the two, and
``__all__``, equal. A new export goes in both.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._atomic import atomic_write_bytes, atomic_write_text, sweep_stale_temps
    from ._collect import (
        RunFiles,
        build_run_metadata,
        build_scene_telemetry,
        collect_scene,
        frames_block,
        parse_policy_text,
        policy_fields,
        write_run,
    )
    from ._contract import (
        CONTRACT_VERSION,
        DOCUMENT_KINDS,
        SCHEMA_FILES,
        SCHEMA_VERSION,
        contract_errors,
        load_schema,
        validate_document,
    )
    from ._contract_doc import render_field_table
    from ._deadline import Deadline
    from ._device_now import device_memory_now
    from ._done import DoneResult, SceneContext, mark_files, write_frames_with_marker
    from ._errors import (
        ClientError,
        ContractError,
        DoneTimeoutError,
        HttpStatusError,
        InvalidInputError,
        MarkerError,
        OutOfTimeError,
        PromptRejected,
        ServerError,
        ServerTimeout,
        ServerUnavailable,
        TelemetryError,
        UnsafePathError,
        ValidationFailed,
    )
    from ._exit_reason import (
        ABANDONED_REASONS,
        EXIT_REASONS,
        RETRYABLE_REASONS,
        ExitReason,
    )
    from ._exposition import CONTENT_TYPE as METRICS_CONTENT_TYPE
    from ._exposition import render_metrics
    from ._gpu import (
        AFTER_LABEL,
        BEFORE_LABEL,
        DEVICE_TYPES,
        DeviceHint,
        Reading,
        build_snapshot,
        device_block,
        device_entry,
        gpu_contract_fields,
        hint_from_torch_device,
        mib,
        probe_nvml,
        ram_block,
        ram_sample,
        reset_torch_peaks,
        run_probe,
        select_device,
        take_snapshot,
    )
    from ._gpu_scene import (
        scene_snapshot,
        ui_line,
    )
    from ._layout import ARTIFACT_METADATA_NAME, RUN_SUMMARY_NAME, telemetry_file_name
    from ._marker import MarkedFile, build_marker, commit_marker, read_marker, verify_marker
    from ._meta import (
        PACKAGE_VERSION,
        iso_from_epoch_ms,
        iso_utc,
        utc_now,
        versions,
    )
    from ._paths import (
        SavePlan,
        ensure_inside,
        marker_name,
        plan_save,
    )
    from ._peak import finish_peak_sampling, start_peak_sampling, stop_stale_sampling
    from ._recorder import record_marker, record_scene, record_verdict
    from ._report import CheckRow, ValidationReport
    from ._runset import begin_run
    from ._safe_read import UNREADABLE, parse_json, read_bounded, read_json
    from ._summary import parse_summary, render_summary
    from ._validate import marker_candidates, validate_run
    from ._wait import wait_for_done

_MODULES: dict[str, tuple[str, ...]] = {
    "_atomic": (
        "atomic_write_bytes",
        "atomic_write_text",
        "sweep_stale_temps",
    ),
    "_collect": (
        "RunFiles",
        "build_run_metadata",
        "build_scene_telemetry",
        "collect_scene",
        "frames_block",
        "parse_policy_text",
        "policy_fields",
        "write_run",
    ),
    "_contract": (
        "CONTRACT_VERSION",
        "DOCUMENT_KINDS",
        "SCHEMA_FILES",
        "SCHEMA_VERSION",
        "contract_errors",
        "load_schema",
        "validate_document",
    ),
    "_contract_doc": ("render_field_table",),
    "_deadline": ("Deadline",),
    "_device_now": ("device_memory_now",),
    "_done": (
        "DoneResult",
        "SceneContext",
        "mark_files",
        "write_frames_with_marker",
    ),
    "_errors": (
        "ClientError",
        "ContractError",
        "DoneTimeoutError",
        "HttpStatusError",
        "InvalidInputError",
        "MarkerError",
        "OutOfTimeError",
        "PromptRejected",
        "ServerError",
        "ServerTimeout",
        "ServerUnavailable",
        "TelemetryError",
        "UnsafePathError",
        "ValidationFailed",
    ),
    "_exit_reason": (
        "ABANDONED_REASONS",
        "EXIT_REASONS",
        "RETRYABLE_REASONS",
        "ExitReason",
    ),
    "_exposition": ("render_metrics",),
    "_gpu": (
        "AFTER_LABEL",
        "BEFORE_LABEL",
        "DEVICE_TYPES",
        "DeviceHint",
        "Reading",
        "build_snapshot",
        "device_block",
        "device_entry",
        "gpu_contract_fields",
        "hint_from_torch_device",
        "mib",
        "probe_nvml",
        "ram_block",
        "ram_sample",
        "reset_torch_peaks",
        "run_probe",
        "select_device",
        "take_snapshot",
    ),
    "_gpu_scene": (
        "scene_snapshot",
        "ui_line",
    ),
    "_layout": (
        "ARTIFACT_METADATA_NAME",
        "RUN_SUMMARY_NAME",
        "telemetry_file_name",
    ),
    "_marker": (
        "MarkedFile",
        "build_marker",
        "commit_marker",
        "read_marker",
        "verify_marker",
    ),
    "_meta": (
        "PACKAGE_VERSION",
        "iso_from_epoch_ms",
        "iso_utc",
        "utc_now",
        "versions",
    ),
    "_paths": (
        "SavePlan",
        "ensure_inside",
        "marker_name",
        "plan_save",
    ),
    "_peak": (
        "finish_peak_sampling",
        "start_peak_sampling",
        "stop_stale_sampling",
    ),
    "_recorder": (
        "record_marker",
        "record_scene",
        "record_verdict",
    ),
    "_report": (
        "CheckRow",
        "ValidationReport",
    ),
    "_runset": ("begin_run",),
    "_safe_read": (
        "UNREADABLE",
        "parse_json",
        "read_bounded",
        "read_json",
    ),
    "_summary": (
        "parse_summary",
        "render_summary",
    ),
    "_validate": (
        "marker_candidates",
        "validate_run",
    ),
    "_wait": ("wait_for_done",),
}
"""Where each public name lives: imported from there on first use (:func:`__getattr__`)."""
_ALIASES: dict[str, tuple[str, str]] = {
    "METRICS_CONTENT_TYPE": ("_exposition", "CONTENT_TYPE"),
}
"""Public names that differ from the name in their module: name → (module, name there)."""

__all__ = [
    "ABANDONED_REASONS",
    "AFTER_LABEL",
    "ARTIFACT_METADATA_NAME",
    "BEFORE_LABEL",
    "CONTRACT_VERSION",
    "DEVICE_TYPES",
    "DOCUMENT_KINDS",
    "EXIT_REASONS",
    "METRICS_CONTENT_TYPE",
    "PACKAGE_VERSION",
    "RETRYABLE_REASONS",
    "RUN_SUMMARY_NAME",
    "SCHEMA_FILES",
    "SCHEMA_VERSION",
    "UNREADABLE",
    "CheckRow",
    "ClientError",
    "ContractError",
    "Deadline",
    "DeviceHint",
    "DoneResult",
    "DoneTimeoutError",
    "ExitReason",
    "HttpStatusError",
    "InvalidInputError",
    "MarkedFile",
    "MarkerError",
    "OutOfTimeError",
    "PromptRejected",
    "Reading",
    "RunFiles",
    "SavePlan",
    "SceneContext",
    "ServerError",
    "ServerTimeout",
    "ServerUnavailable",
    "TelemetryError",
    "UnsafePathError",
    "ValidationFailed",
    "ValidationReport",
    "atomic_write_bytes",
    "atomic_write_text",
    "begin_run",
    "build_marker",
    "build_run_metadata",
    "build_scene_telemetry",
    "build_snapshot",
    "collect_scene",
    "commit_marker",
    "contract_errors",
    "device_block",
    "device_entry",
    "device_memory_now",
    "ensure_inside",
    "finish_peak_sampling",
    "frames_block",
    "gpu_contract_fields",
    "hint_from_torch_device",
    "iso_from_epoch_ms",
    "iso_utc",
    "load_schema",
    "mark_files",
    "marker_candidates",
    "marker_name",
    "mib",
    "parse_policy_text",
    "parse_json",
    "parse_summary",
    "plan_save",
    "policy_fields",
    "probe_nvml",
    "ram_block",
    "ram_sample",
    "read_bounded",
    "read_json",
    "read_marker",
    "record_marker",
    "record_scene",
    "record_verdict",
    "render_field_table",
    "render_metrics",
    "render_summary",
    "reset_torch_peaks",
    "run_probe",
    "scene_snapshot",
    "select_device",
    "start_peak_sampling",
    "stop_stale_sampling",
    "sweep_stale_temps",
    "take_snapshot",
    "telemetry_file_name",
    "ui_line",
    "utc_now",
    "validate_document",
    "validate_run",
    "verify_marker",
    "versions",
    "wait_for_done",
    "write_frames_with_marker",
    "write_run",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use, and keep it (the next lookup is a plain attribute)."""
    module, attribute = _ALIASES.get(name, (_OWNER.get(name, ""), name))
    if not module:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


_OWNER: dict[str, str] = {name: module for module, names in _MODULES.items() for name in names}
