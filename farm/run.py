"""``run`` with several servers: prepare against each, dispatch, write and validate the run folder.

:func:`prepare_farm` runs the single-server prepare step (inputs, ``--out``, preflight, the checks)
against the servers in order until one passes, then checks every other server with the same workflow.
A server that fails preflight or the checks is left out with one line; only when none passes does the
run not start (the last server's exit code: 10, 11 or 12). :func:`run_farm` runs the scenes through a
:class:`dispatch.Dispatcher` and writes the same run documents as a single-server run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..runner.attempt import Notify
from ..runner.outcomes import RunResult, SceneOutcome
from ..runner.prepare import PreparedRun, PrepareFailure, RunRequest, prepare_run
from ..runner.state import RunState
from ..telemetry import build_run_metadata, validate_run, write_run
from .dispatch import DEFAULT_PROBE_INTERVAL_S, DEFAULT_QUARANTINE_AFTER, Dispatcher, SharedRunState
from .redact import redact_url
from .servers import FarmServer, check_server, device_name, instance_id
from .stats import ServerStats


@dataclass(frozen=True)
class FarmPrepared:
    """A farm run ready to start: the prepared run (first usable server) and every usable server."""

    prepared: PreparedRun
    servers: list[FarmServer]
    left_out: list[ServerStats]


@dataclass
class FarmRunResult(RunResult):
    """A run's result plus one line of counts per server."""

    servers: list[ServerStats] = field(default_factory=list)


@dataclass(frozen=True)
class FarmSettings:
    per_server: int = 1
    quarantine_after: int = DEFAULT_QUARANTINE_AFTER
    probe_interval_s: float = DEFAULT_PROBE_INTERVAL_S


def prepare_farm(
    request: RunRequest, urls: Sequence[str], *, warn: Callable[[str], None] = lambda _: None
) -> FarmPrepared | PrepareFailure:
    """The run prepared against the first server that passes; every other server checked; the left-out named."""
    left_out: list[ServerStats] = []
    prepared: PreparedRun | None = None
    first: FarmServer | None = None
    last_failure: PrepareFailure | None = None
    remaining = list(urls)
    while remaining and prepared is None:
        url = remaining.pop(0)
        outcome = prepare_run(dataclasses.replace(request, server=url), warn=warn)
        if isinstance(outcome, PrepareFailure) and outcome.stage != "preflight":
            return outcome  # the inputs, --out or the workflow itself: no other server changes that
        if isinstance(outcome, PrepareFailure):
            last_failure = outcome
            left_out.append(_left_out(url, outcome.reason))
            warn(f"server {redact_url(url)} left out: {outcome.reason}")
            continue
        prepared = outcome
        stats = _system_stats(outcome)
        first = FarmServer(url, instance_id(url, stats), device_name(stats), outcome.options.comfyui_version)
    if prepared is None or first is None:
        assert last_failure is not None
        reason = f"no usable server ({len(left_out)} left out); last: {last_failure.reason}"
        return PrepareFailure("preflight", reason, last_failure.exit_code)
    servers = [first]
    for url in remaining:
        check = check_server(
            url, prepared.workflow, prepared.scenes, prepared.mapping, min_free_vram_mb=request.min_free_vram_mb
        )
        for warning in check.warnings:
            warn(warning)
        if check.server is None:
            left_out.append(_left_out(url, check.problem or "unusable"))
            warn(f"server {redact_url(url)} left out: {check.problem}")
        else:
            servers.append(check.server)
    return FarmPrepared(prepared, servers, left_out)


def _system_stats(prepared: PreparedRun) -> dict[str, object] | None:
    try:
        return prepared.client.system_stats(timeout_s=3.0)
    except Exception:  # the identity falls back to the URL alone; the run itself does not need it
        return None


def _left_out(url: str, reason: str) -> ServerStats:
    return ServerStats(redact_url(url), instance_id(url, None), left_out=reason)


def open_state(farm: FarmPrepared) -> SharedRunState:
    """The run's resume record (``--resume``: the earlier one; an unreadable one is InvalidInputError)."""
    options = farm.prepared.options
    loaded = (RunState.load if options.resume else RunState.new)(options.run_dir, options.run_id)
    return SharedRunState(loaded.run_dir, loaded.data)


def run_farm(
    farm: FarmPrepared, state: SharedRunState, settings: FarmSettings, *, notify: Notify | None = None
) -> FarmRunResult:
    """Every scene over the farm's servers; then the run documents and the validator, as a single-server run."""
    prepared, options = farm.prepared, farm.prepared.options
    options.run_dir.mkdir(parents=True, exist_ok=True)
    result = FarmRunResult(options.run_id, options.run_dir)
    todo = []
    kept = {}
    for scene in prepared.scenes:
        done = state.finished_document(scene.id) if options.resume else None
        if done is not None:
            kept[scene.id] = done
            if notify is not None:
                notify({"event": "scene_skipped", "scene": scene.id, "reason": "finished before (--resume)"})
        else:
            todo.append(scene)
    dispatcher = Dispatcher(
        farm.servers,
        prepared.workflow,
        prepared.mapping,
        options,
        state,
        per_server=settings.per_server,
        quarantine_after=settings.quarantine_after,
        probe_interval_s=settings.probe_interval_s,
        notify=notify,
    )
    ran = {outcome.scene_id: outcome for outcome in dispatcher.run(todo)}
    for scene in prepared.scenes:
        if scene.id in kept:
            doc = kept[scene.id]
            result.scenes.append(SceneOutcome(scene.id, doc.get("PromptId"), "success", doc))
        else:
            result.scenes.append(ran[scene.id])
    result.servers = dispatcher.stats + farm.left_out
    metadata = build_run_metadata(
        [s.document for s in result.scenes],
        run_id=options.run_id,
        writer="runner",
        comfyui_version=options.comfyui_version,
    )
    metadata["Servers"] = [stats.contract() for stats in result.servers]  # run-summary.txt: one line each
    write_run(options.run_dir, metadata)
    report = validate_run(options.run_dir, output_dir=options.comfy_output_dir)
    result.validation_ok, result.validation_report = bool(report.ok), report.to_dict()
    return result
