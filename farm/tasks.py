"""The farm's one task: a scene on this worker's ComfyUI server, its record written into the shared run folder.

The message carries everything the scene needs (workflow, mapping, scene, policy, run id, run folder);
the worker knows its server. The scene runs through the same core as ``run``
(:class:`runner.scene.SceneExecutor`), its frames (remote: copied through ``/view``) go to
``RUN_DIR/<scene-id>/`` and its record to ``RUN_DIR/.farm/scenes/<scene-id>.json`` (atomically, last):
that file is the scene's completion on shared storage, which ``farm submit`` waits for.

**At most once to completion.** The message is acknowledged only after the record is written. A
redelivered message (its worker was killed) finds the scene's state in ``RUN_DIR/.farm/state/<scene-id>/``:
a scene that already has its record is not run again; a prompt the same server still has is
re-attached (deterministic prompt ids); a prompt another server may still run is stopped there first.
An ``executionError`` or ``serverLost`` within the retry budget is sent back to the queue as the next
attempt, so an idle worker (another server) usually takes it.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Celery

if TYPE_CHECKING:
    from ..monitoring import Monitor

from ..comfy_api.client import ComfyClient
from ..runner.attempt import abandon
from ..runner.checks import check_mapping, check_workflow
from ..runner.options import RunOptions, scene_worst_case_s
from ..runner.policy import QueuePolicy
from ..runner.scene import SceneExecutor
from ..runner.scenes import SCENE_ID_RE, FieldMapping, Scene, Target
from ..runner.state import RunState
from ..telemetry import (
    RETRYABLE_REASONS,
    ClientError,
    InvalidInputError,
    atomic_write_text,
    iso_utc,
    read_bounded,
    utc_now,
)
from .celery_app import QUEUE
from .servers import FarmServer
from .shared_pace import SharedPace

logger = logging.getLogger(__name__)

FARM_DIR = ".farm"
RECORDS = f"{FARM_DIR}/scenes"
STATES = f"{FARM_DIR}/state"
PROBE_TIMEOUT_S = 2.0
DOWN_BACKOFF_S = 3.0
"""A worker whose server does not answer puts the scene back and pauses this long before taking another
(the Celery side's quarantine: its server is probed with every scene it is offered)."""
MAX_RECORD_BYTES = 16 * 1024 * 1024
"""A scene record is a few kB; the cap bounds a hostile file in the run folder."""
MAX_REFUSALS = 20
"""A scene no worker's server can run (every one refused it this often) is run anyway: its record then says why."""
LEAVE_PAUSE_S = 0.25
"""A worker that left a scene to faster ones waits this long before it takes the next message."""
CONFIG_KEY = "scene_telemetry_worker"
"""``app.conf`` key of this worker's :class:`WorkerConfig` (set by ``farm worker`` before it starts)."""


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker knows that a message does not: its server, and where the shared run folders are here."""

    server: FarmServer
    out_root: str | None = None
    """This machine's mount of the shared folder: a run folder ``NAME`` is ``out_root/NAME`` (None: the
    message's absolute path, the same mount on every machine)."""
    comfy_output_dir: str | None = None
    """Not offered by ``farm worker``: submit validates the run folder alone, so every worker copies the frames
    and marker there through ``/view`` (a local output folder would leave them on the GPU host)."""
    server_grace_s: float = 60.0
    hostname: str = socket.gethostname()
    metrics_port: int | None = None
    """``--metrics-port``: Prometheus metrics of this worker's scenes (served by its pool process)."""
    webhooks: tuple[str, ...] = ()
    """``--webhook``: a signed event per scene end."""
    visibility_timeout_s: float | None = None
    """The broker's visibility timeout this worker runs with (a run whose scenes may take longer is warned about)."""


_fit_checked: dict[str, str | None] = {}
"""Run id → why this worker's server cannot run that run's workflow (None: it can)."""
_pace: SharedPace | None = None
"""This pool process's pace, shared through the broker's Redis (created with its first scene)."""
_monitor: Monitor | None = None
"""The pool process's monitor (opened when the process starts: threads do not survive the fork)."""


def open_monitor(config: WorkerConfig) -> None:
    """``worker_process_init``: start this process's metrics endpoint and webhook sender, if asked for."""
    global _monitor
    if config.metrics_port is None and not config.webhooks:
        return
    from ..monitoring import Monitor

    try:
        _monitor = Monitor.from_options(config.metrics_port, list(config.webhooks), source="farm-worker")
    except OSError as exc:
        logger.warning("monitoring not started: --metrics-port %s: %s", config.metrics_port, exc)
        return
    _monitor.server_up(config.server.label, True)


def close_monitor() -> None:
    """``worker_process_shutdown``: queued webhook events get the monitor's short grace, then it stops."""
    global _monitor
    if _monitor is not None:
        _monitor.close()
        _monitor = None


def _scene_ended(document: dict[str, Any], run_id: str, config: WorkerConfig) -> None:
    if _monitor is None:
        return
    try:
        _monitor.scene_ended(document, run_id=run_id)
        _monitor.server_up(config.server.label, document.get("HistoryExitReason") != "serverLost")
    except Exception:  # monitoring must never fail a scene
        logger.warning("monitoring failed for scene %s", document.get("SceneId"), exc_info=True)


def mapping_to_json(mapping: FieldMapping) -> dict[str, list[dict[str, Any]]]:
    return {name: [asdict(t) for t in targets] for name, targets in mapping.items()}


def mapping_from_json(data: dict[str, list[dict[str, Any]]]) -> FieldMapping:
    return {name: [Target(**t) for t in targets] for name, targets in data.items()}


def record_path(run_dir: Path, scene_id: str) -> Path:
    return run_dir / RECORDS / f"{scene_id}.json"


def read_record(path: Path, run_id: str | None = None) -> dict[str, Any] | None:
    """A scene's record, or None when there is none yet (or a torn one, which cannot happen: atomic writes)."""
    try:
        data = json.loads(read_bounded(path, MAX_RECORD_BYTES).decode("utf-8"))  # never blocks on a FIFO
    except (InvalidInputError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("Document"), dict):
        return None
    if run_id is not None and data.get("RunId") != run_id:
        return None  # a record an earlier run's straggler wrote: not this run's
    return data


def payload_problem(payload: Any) -> str | None:
    """Why a message must not be run (None: it may). Anyone who can write to the broker can send one, so the
    names that become paths are checked here, not only by ``submit``: a scene id or a run name such as
    ``../x`` or ``/etc`` would put the record and frames outside the run folder (outside ``--out``)."""
    if not isinstance(payload, dict):
        return "the message is not an object"
    scene = payload.get("scene")
    if not isinstance(scene, dict):
        return "the message names no scene"
    scene_id = scene.get("id")
    if not isinstance(scene_id, str) or not SCENE_ID_RE.match(scene_id) or ".." in scene_id:
        return f"scene id {str(scene_id)[:80]!r} is not a plain name"
    if not isinstance(scene.get("values"), dict) or not isinstance(payload.get("run_id"), str):
        return f"scene {scene_id}: the message lacks its values or run id"
    name = payload.get("run_name")
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\x00"):
        return f"scene {scene_id}: run folder name {str(name)[:80]!r} is not a plain name"
    if not isinstance(payload.get("run_dir"), str) or not Path(payload["run_dir"]).is_absolute():
        return f"scene {scene_id}: the run folder is not an absolute path"
    return None


def run_dir_of(payload: dict[str, Any], config: WorkerConfig) -> Path:
    if config.out_root:
        return Path(config.out_root) / str(payload["run_name"])
    return Path(str(payload["run_dir"]))


def register(app: Celery) -> None:
    """Add the scene task to *app* (late ack, re-queued when its worker process is lost)."""

    @app.task(name="scene_telemetry.farm.run_scene", bind=True, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def run_scene(self: Any, payload: dict[str, Any]) -> dict[str, Any]:
        global _pace
        config: WorkerConfig = self.app.conf[CONFIG_KEY]
        if _pace is None:
            _pace = SharedPace(self.app.conf.broker_url, str(self.request.hostname or config.hostname), QUEUE)
        return execute_guarded(
            payload, config, requeue=lambda next_payload: _requeue(self.app, next_payload), pace=_pace
        )


MAX_CRASHES = 3
"""A scene whose task raised (an unwritable run folder, a full disk) goes back to the queue this often."""


def execute_guarded(
    payload: dict[str, Any], config: WorkerConfig, *, requeue: Any, pace: SharedPace | None = None
) -> dict[str, Any]:
    """:func:`execute`, but a crash sends the scene back to the queue (at most :data:`MAX_CRASHES` times).

    Celery acknowledges a task that raised: without this the scene left the queue with no record, and
    ``farm submit`` waited for it for ever.
    """
    try:
        return execute(payload, config, requeue=requeue, pace=pace)
    except Exception as exc:
        crashes = int(payload.get("crashes", 0)) + 1 if isinstance(payload, dict) else MAX_CRASHES + 1
        scene = payload.get("scene", {}).get("id") if isinstance(payload, dict) else None
        if crashes > MAX_CRASHES:
            logger.error("scene %s: the task failed %d times, last: %s; it is dropped", scene, crashes - 1, exc)
            raise
        logger.error("scene %s: the task failed (%s: %s); back to the queue", scene, type(exc).__name__, exc)
        requeue({**payload, "crashes": crashes})
        time.sleep(DOWN_BACKOFF_S)  # another worker, whose folder may be fine, takes it first
        return {"scene": scene, "requeued": True, "reason": f"{type(exc).__name__}: {exc}"}


def _requeue(app: Celery, payload: dict[str, Any]) -> None:
    task_id = f"{payload['run_id']}:{payload['scene']['id']}:{payload['attempt']}"
    app.send_task("scene_telemetry.farm.run_scene", args=[payload], task_id=task_id)


def execute(
    payload: dict[str, Any], config: WorkerConfig, *, requeue: Any, pace: SharedPace | None = None
) -> dict[str, Any]:
    """Run one scene (or recognise it as done); write its record; the summary the task returns."""
    problem = payload_problem(payload)
    if problem is not None:  # not from `farm submit`: acknowledged and dropped, nothing written
        logger.warning("refused a message: %s", problem)
        return {"refused": problem}
    run_dir = run_dir_of(payload, config)
    scene = Scene(str(payload["scene"]["id"]), dict(payload["scene"]["values"]))
    path = record_path(run_dir, scene.id)
    existing = read_record(path, str(payload["run_id"]))
    if existing is not None:
        logger.info("scene %s already has its record (a redelivered message); not run again", scene.id)
        return {"scene": scene.id, "exit_reason": existing["Document"].get("HistoryExitReason"), "duplicate": True}
    if not _server_answers(config.server.url):
        logger.warning("scene %s: server %s does not answer; back to the queue", scene.id, config.server.label)
        requeue(payload)  # nothing ran: the retry budget is not spent
        time.sleep(DOWN_BACKOFF_S)  # this worker holds no scene meanwhile, so the others take it first
        return {"scene": scene.id, "requeued": True, "reason": "server down"}
    _check_visibility(payload, config)
    unfit = _unfit(payload, config)
    if unfit is not None and int(payload.get("refusals", 0)) < MAX_REFUSALS:
        logger.warning(
            "scene %s: server %s cannot run it (%s); back to the queue", scene.id, config.server.label, unfit
        )
        requeue({**payload, "refusals": int(payload.get("refusals", 0)) + 1})
        time.sleep(DOWN_BACKOFF_S)
        return {"scene": scene.id, "requeued": True, "reason": unfit}
    if pace is not None and int(payload.get("attempt", 1)) == 1 and pace.should_leave():
        requeue(payload)  # faster workers would end every waiting scene first (earliest finish)
        time.sleep(LEAVE_PAUSE_S)
        return {"scene": scene.id, "requeued": True, "reason": "left to a faster worker"}
    run_id = str(payload["run_id"])
    state = RunState.load(run_dir / STATES / scene.id, run_id)
    _stop_elsewhere(state, scene.id, config)
    entry = state.scenes.setdefault(scene.id, {"PromptIds": [], "Document": None})
    entry["Server"], entry["ServerInstanceId"] = config.server.label, config.server.instance_id  # no credentials
    state.save()
    options = RunOptions(
        server=config.server.url,
        run_dir=run_dir,
        policy=QueuePolicy(**payload["policy"]),
        run_id=run_id,
        comfy_output_dir=Path(config.comfy_output_dir) if config.comfy_output_dir else None,
        resume=True,
        gpu_snapshots=bool(payload.get("gpu_snapshots", True)),
        comfyui_version=config.server.comfyui_version,
        server_grace_s=config.server_grace_s,
    )
    client = ComfyClient(config.server.url)
    executor = SceneExecutor(
        client,
        payload["workflow"],
        mapping_from_json(payload["mapping"]),
        options,
        state,
        fields=config.server.record_fields(),
    )
    attempt = int(payload.get("attempt", 1))
    retries_left = int(payload.get("retries_left", 0))
    first = max(attempt, len(state.prompt_ids(scene.id)) + 1)  # a prompt the server still has is re-attached
    started = time.monotonic()
    if pace is not None:
        pace.begin()
    outcome = executor.run(scene, first_attempt=first, retry_here=False)
    if pace is not None:
        pace.end(time.monotonic() - started, outcome.ok)
    retryable = outcome.exit_reason in RETRYABLE_REASONS or outcome.exit_reason == "serverLost"
    if not outcome.ok and retryable and retries_left > 0:
        used = int(outcome.document.get("SceneAttempts") or first)
        logger.warning("scene %s: %s on %s; back to the queue", scene.id, outcome.exit_reason, config.server.label)
        requeue({**payload, "attempt": used + 1, "retries_left": retries_left - 1})
        return {"scene": scene.id, "exit_reason": outcome.exit_reason, "requeued": True}
    record = {
        "RunId": run_id,
        "SceneId": scene.id,
        "Worker": config.hostname,
        "FinishedAt": iso_utc(utc_now()),
        "Document": outcome.document,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    _scene_ended(outcome.document, run_id, config)
    return {"scene": scene.id, "exit_reason": outcome.exit_reason, "ok": outcome.ok}


def _check_visibility(payload: dict[str, Any], config: WorkerConfig) -> None:
    """Warn once per run when its scenes may outlast the visibility timeout (a second worker could get one)."""
    key = f"visibility:{payload['run_id']}"
    if config.visibility_timeout_s is None or key in _fit_checked:
        return
    _fit_checked[key] = None
    policy = QueuePolicy(**payload["policy"])
    gpu = bool(payload.get("gpu_snapshots", True))
    options = RunOptions(server="", run_dir=Path("."), policy=policy, run_id="", resume=True, gpu_snapshots=gpu)
    worst = scene_worst_case_s(options)
    if worst > config.visibility_timeout_s:
        logger.warning(
            "run %s: a scene may take %g s, longer than this worker's visibility timeout (%g s); restart the workers "
            "with --visibility-timeout-seconds %g or more",
            payload["run_id"],
            worst,
            config.visibility_timeout_s,
            1.5 * worst,
        )


def _unfit(payload: dict[str, Any], config: WorkerConfig) -> str | None:
    """Why this worker's server cannot run the payload's workflow (its /object_info; checked once per run)."""
    key = str(payload["run_id"])
    if key not in _fit_checked:
        try:
            info = ComfyClient(config.server.url).object_info()
        except ClientError as exc:
            return f"/object_info failed: {exc}"
        workflow, mapping = payload["workflow"], mapping_from_json(payload["mapping"])
        problems = check_workflow(workflow, info) + check_mapping([], workflow, mapping, info)
        _fit_checked[key] = f"{problems[0]} ({len(problems)} problem(s))" if problems else None
    return _fit_checked[key]


def _server_answers(url: str) -> bool:
    try:
        ComfyClient(url).system_stats(timeout_s=PROBE_TIMEOUT_S)
    except ClientError:
        return False
    return True


def _stop_elsewhere(state: RunState, scene_id: str, config: WorkerConfig) -> None:
    """A redelivered scene whose last prompt went to another server: stop it there (bounded, best effort)."""
    entry = state.scenes.get(scene_id, {})
    previous, previous_id = entry.get("Server"), entry.get("ServerInstanceId")
    ids = state.prompt_ids(scene_id)
    if not isinstance(previous, str) or previous_id == config.server.instance_id or not ids:
        return
    if "***" in previous:  # its credentials were not recorded: it cannot be reached from here
        logger.warning("scene %s was on %s when its worker was lost; it may still run there", scene_id, previous)
        return
    logger.warning("scene %s was on %s when its worker was lost; stopping it there", scene_id, previous)
    abandon(ComfyClient(previous, request_timeout_s=5.0), scene_id, ids[-1])
