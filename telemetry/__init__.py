"""scene-telemetry's pure-Python library.

No ComfyUI, torch or GPU library is imported here and nothing runs at import
time; the node adapters in ``nodes/`` and the command-line tool in ``cli/`` call
into these functions.
"""

from ._atomic import atomic_write_bytes, atomic_write_text, sweep_stale_temps
from ._contract import (
    DOCUMENT_KINDS,
    SCHEMA_VERSION,
    contract_errors,
    load_schema,
    validate_document,
)
from ._done import DoneResult, SceneContext, mark_files, write_frames_with_marker
from ._errors import (
    ClientError,
    ContractError,
    DoneTimeoutError,
    InvalidInputError,
    MarkerError,
    ServerUnavailable,
    TelemetryError,
    UnsafePathError,
    ValidationFailed,
)
from ._gpu import gpu_contract_fields, ram_sample, reset_torch_peaks, take_snapshot
from ._marker import build_marker, commit_marker, read_marker, verify_marker
from ._meta import PACKAGE_VERSION
from ._paths import SavePlan, plan_save
from ._wait import wait_for_done

__all__ = [
    "DOCUMENT_KINDS",
    "PACKAGE_VERSION",
    "SCHEMA_VERSION",
    "ClientError",
    "ContractError",
    "DoneResult",
    "DoneTimeoutError",
    "InvalidInputError",
    "MarkerError",
    "SavePlan",
    "SceneContext",
    "ServerUnavailable",
    "TelemetryError",
    "UnsafePathError",
    "ValidationFailed",
    "atomic_write_bytes",
    "atomic_write_text",
    "build_marker",
    "commit_marker",
    "contract_errors",
    "gpu_contract_fields",
    "load_schema",
    "mark_files",
    "plan_save",
    "ram_sample",
    "read_marker",
    "reset_torch_peaks",
    "sweep_stale_temps",
    "take_snapshot",
    "validate_document",
    "verify_marker",
    "wait_for_done",
    "write_frames_with_marker",
]
