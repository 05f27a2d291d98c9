"""Everything ``run`` does before the first scene, as one step that returns a value.

:func:`prepare_run` loads the workflow (API or editor format), scene list and mapping, checks that
``--out`` can be written, runs preflight against the server, converts an editor workflow with the
server's ``/object_info`` and checks workflow and mapping against it. It returns a
:class:`PreparedRun` or the first :class:`PrepareFailure` (stage, one-line reason, exit code); the
command only prints.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..comfy_api.client import ComfyClient
from ..comfy_api.preflight import DEFAULT_MIN_FREE_VRAM_MB, DEFAULT_PREFLIGHT_BUDGET_S, run_preflight
from ..telemetry import InvalidInputError, utc_now
from .checks import check_mapping, check_workflow, required_classes
from .options import RunOptions, scene_worst_case_s
from .policy import QueuePolicy
from .scenes import FieldMapping, Scene, load_data_file, load_mapping, load_scenes, parse_workflow
from .state import read_state_run_id
from .workflow_format import editor_required_classes, editor_to_api, is_editor_workflow

EXIT_USAGE = 2
EXIT_WORKFLOW_INVALID = 13

Stage = Literal["usage", "input", "out", "preflight", "invalid", "resume"]


@dataclass(frozen=True)
class RunRequest:
    """What the command line asked for (paths as given; the policy already resolved)."""

    workflow: str
    scenes: str
    server: str
    out: Path
    policy: QueuePolicy
    mapping: str | None = None
    run_id: str | None = None
    comfy_output_dir: str | None = None
    resume: bool = False
    min_free_vram_mb: float = DEFAULT_MIN_FREE_VRAM_MB
    gpu_snapshots: bool = True
    preflight_budget_s: float = DEFAULT_PREFLIGHT_BUDGET_S


@dataclass(frozen=True)
class PrepareFailure:
    """Why the run cannot start: the stage, one line, the exit code, and (``invalid``) every problem."""

    stage: Stage
    reason: str
    exit_code: int
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class PreparedRun:
    """A run ready to start: an API-format workflow checked against the server, and the runner's options."""

    client: ComfyClient
    workflow: dict[str, Any]
    scenes: list[Scene]
    mapping: FieldMapping
    options: RunOptions
    editor_format: bool = False
    """The workflow file was in the editor's format and was converted with the server's ``/object_info``."""

    @property
    def worst_case_s(self) -> float:
        return scene_worst_case_s(self.options)


@dataclass(frozen=True)
class _Inputs:
    workflow: dict[str, Any]
    editor: bool
    scenes: list[Scene]
    mapping: FieldMapping


def prepare_run(request: RunRequest, *, warn: Callable[[str], None] = lambda _: None) -> PreparedRun | PrepareFailure:
    """Load, check, preflight; *warn* receives each preflight warning (low VRAM) as it is found."""
    try:
        inputs = _load_inputs(request)
    except InvalidInputError as exc:
        return PrepareFailure("input", str(exc), EXIT_USAGE)
    unwritable = out_problem(request.out)
    if unwritable is not None:  # before preflight: nothing talks to the server for a run that cannot be written
        return PrepareFailure("out", unwritable, EXIT_USAGE)
    run_id = request.run_id or (read_state_run_id(request.out) if request.resume else None) or new_run_id()
    client = ComfyClient(request.server)
    classes = editor_required_classes(inputs.workflow) if inputs.editor else required_classes(inputs.workflow)
    report = run_preflight(
        client,
        classes,
        server=request.server,
        min_free_vram_mb=request.min_free_vram_mb,
        budget_s=request.preflight_budget_s,
    )
    for warning in report.warnings:
        warn(warning)
    if report.failure is not None:
        return PrepareFailure("preflight", report.failure.reason, report.failure.exit_code)
    workflow = inputs.workflow
    if inputs.editor:
        try:
            workflow = editor_to_api(inputs.workflow, report.object_info)
        except InvalidInputError as exc:
            return PrepareFailure("invalid", "1 problem(s); nothing was queued", EXIT_WORKFLOW_INVALID, (str(exc),))
    problems = check_workflow(workflow, report.object_info)
    problems += check_mapping(inputs.scenes, workflow, inputs.mapping, report.object_info)
    if problems:
        lines = tuple(str(p) for p in problems)
        return PrepareFailure(
            "invalid", f"{len(problems)} problem(s); nothing was queued", EXIT_WORKFLOW_INVALID, lines
        )
    options = RunOptions(
        server=request.server,
        run_dir=request.out,
        policy=request.policy,
        run_id=run_id,
        comfy_output_dir=Path(request.comfy_output_dir).resolve() if request.comfy_output_dir else None,
        resume=request.resume,
        gpu_snapshots=request.gpu_snapshots,
        comfyui_version=report.comfyui_version,
    )
    return PreparedRun(client, workflow, inputs.scenes, inputs.mapping, options, inputs.editor)


def _load_inputs(request: RunRequest) -> _Inputs:
    data = load_data_file(request.workflow)
    editor = is_editor_workflow(data)
    try:
        workflow = data if editor else parse_workflow(data)
        if editor:
            editor_required_classes(data)  # a node without a type is an input error, found before preflight
    except InvalidInputError as exc:
        exc.path = exc.path or request.workflow
        raise
    scenes = load_scenes(request.scenes)
    mapping = load_mapping(request.mapping) if request.mapping else {}
    return _Inputs(workflow, editor, scenes, mapping)


def out_problem(run_dir: Path) -> str | None:
    """Why *run_dir* cannot be written (one line), or None. Creates nothing: the nearest existing folder on
    the way is tried with an anonymous temporary file (``os.access`` says yes to root on a read-only mount)."""
    probe = run_dir
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"--out {run_dir}: {probe} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        return f"--out {run_dir}: cannot write in {probe}: {exc.strerror or exc}"
    return None


def new_run_id() -> str:
    """``run-<UTC time>-<6 hex>``: sortable by start time, unique enough for one machine."""
    return f"run-{utc_now().strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"


__all__ = [
    "EXIT_USAGE",
    "EXIT_WORKFLOW_INVALID",
    "PrepareFailure",
    "PreparedRun",
    "RunRequest",
    "new_run_id",
    "out_problem",
    "prepare_run",
]
