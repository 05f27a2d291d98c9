"""``farm submit``: queue every scene on the broker, follow the records on shared storage, write the run.

Completion is the scene record each worker writes last into ``RUN_DIR/.farm/scenes/`` (atomically), so
progress needs no result backend and works on a network share (the folder is polled, not watched).
While waiting, the broker is pinged every second; when it stays unreachable for ``broker_loss_bound_s``
submit stops with one line (the workers re-queue what they hold; ``--resume`` continues). At the end the
run documents are written and validated exactly as by ``run``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runner.outcomes import RunResult, SceneOutcome
from ..runner.policy import QueuePolicy
from ..runner.prepare import new_run_id, out_problem
from ..runner.scenes import FieldMapping, Scene, load_data_file, load_mapping, load_scenes, parse_workflow
from ..runner.workflow_format import is_editor_workflow
from ..telemetry import (
    InvalidInputError,
    atomic_write_text,
    build_run_metadata,
    read_bounded,
    validate_run,
    write_run,
)
from .celery_app import QUEUE, TASK_NAME, VISIBILITY_MARGIN, make_app, visibility_timeout_for
from .redact import redact_text, redact_url
from .stats import ServerStats, stats_from_documents
from .tasks import FARM_DIR, RECORDS, STATES, mapping_to_json, read_record, record_path

logger = logging.getLogger(__name__)

EXIT_USAGE = 2
EXIT_BROKER_UNREACHABLE = 10
"""The broker did not answer (at the start, or for ``broker_loss_bound_s`` while waiting): ``run``'s
'server unreachable' code."""
BROKER_LOSS_BOUND_S = 10.0
PING_TIMEOUT_S = 1.0
QUIET_NOTICE_S = 60.0
"""No scene ended for this long: say so once per period (no worker running is the usual reason)."""
RUN_FILE = f"{FARM_DIR}/run.json"

Notify = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class SubmitRequest:
    workflow: str
    scenes: str
    broker: str
    out: Path
    policy: QueuePolicy
    mapping: str | None = None
    run_id: str | None = None
    resume: bool = False
    gpu_snapshots: bool = True
    broker_loss_bound_s: float = BROKER_LOSS_BOUND_S
    poll_interval_s: float = 0.5


@dataclass(frozen=True)
class SubmitFailure:
    reason: str
    exit_code: int


@dataclass
class SubmitResult(RunResult):
    servers: list[ServerStats] = field(default_factory=list)
    queued: int = 0


def submit_run(request: SubmitRequest, *, notify: Notify = lambda _: None) -> SubmitResult | SubmitFailure:
    """Queue, wait, write, validate; a failure before the end is one line and an exit code."""
    try:
        workflow, scenes, mapping = _load(request)
    except InvalidInputError as exc:
        return SubmitFailure(str(exc), EXIT_USAGE)
    problem = out_problem(request.out)
    if problem is not None:
        return SubmitFailure(problem, EXIT_USAGE)
    run_id = request.run_id or (_recorded_run_id(request.out) if request.resume else None) or new_run_id()
    broker = redact_url(request.broker)
    try:
        ping = _pinger(request.broker)
        ping()
    except Exception as exc:  # redis-py raises its own ConnectionError/TimeoutError family
        return SubmitFailure(f"broker {broker} unreachable: {redact_text(str(exc), request.broker)}", 10)
    _prepare_folder(request.out, run_id, scenes, resume=request.resume)
    app = make_app(request.broker, visibility_timeout_s=visibility_timeout_for(request.policy))
    todo = [s for s in scenes if read_record(record_path(request.out, s.id), run_id) is None]
    base = {
        "run_id": run_id,
        "run_name": request.out.resolve().name,
        "run_dir": str(request.out.resolve()),
        "workflow": workflow,
        "mapping": mapping_to_json(mapping),
        "policy": request.policy.as_dict(),
        "gpu_snapshots": request.gpu_snapshots,
        "attempt": 1,
        "retries_left": request.policy.scene_retry_budget,
    }
    try:
        for scene in todo:
            payload = {**base, "scene": {"id": scene.id, "values": scene.values}}
            app.send_task(TASK_NAME, args=[payload], task_id=f"{run_id}:{scene.id}:1", queue=QUEUE)
    except Exception as exc:  # kombu's OperationalError and friends
        return SubmitFailure(
            f"broker {broker}: could not queue the scenes: {redact_text(str(exc), request.broker)}", 10
        )
    finally:
        app.close()
    notify({"event": "submitted", "run_id": run_id, "queued": len(todo), "kept": len(scenes) - len(todo)})
    needed, default = visibility_timeout_for(request.policy), visibility_timeout_for(QueuePolicy())
    if needed > default:
        notify(
            {
                "event": "warning",
                "message": f"a scene under this policy may take {needed / VISIBILITY_MARGIN:g} s: start the workers "
                f"with --visibility-timeout-seconds {needed:g} or more (default {default:g}), or a scene still "
                "running could be handed to a second worker",
            }
        )
    failure = _wait(request, run_id, scenes, ping, notify)
    if failure is not None:
        return failure
    return _finish(request, run_id, scenes, queued=len(todo))


def _load(request: SubmitRequest) -> tuple[dict[str, Any], list[Scene], FieldMapping]:
    data = load_data_file(request.workflow)
    if is_editor_workflow(data):
        raise InvalidInputError(
            "farm submit takes an API-format workflow (the editor's Export (API), or `run` converts it)",
            path=request.workflow,
        )
    workflow = parse_workflow(data)
    scenes = load_scenes(request.scenes)
    mapping = load_mapping(request.mapping) if request.mapping else {}
    return workflow, scenes, mapping


def _recorded_run_id(run_dir: Path) -> str | None:
    try:
        value = json.loads(read_bounded(run_dir / RUN_FILE, 1024 * 1024).decode("utf-8")).get("RunId")
    except (InvalidInputError, ValueError, AttributeError, RecursionError):  # a FIFO there: refused, not blocked on
        return None
    return value if isinstance(value, str) else None


def _prepare_folder(run_dir: Path, run_id: str, scenes: list[Scene], *, resume: bool) -> None:
    """A fresh run drops the farm files of an earlier one; ``--resume`` keeps successful records only."""
    farm = run_dir / FARM_DIR
    if not resume or _recorded_run_id(run_dir) != run_id:
        shutil.rmtree(farm, ignore_errors=True)
    else:
        for scene in scenes:
            record = read_record(record_path(run_dir, scene.id), run_id)
            if record is not None and record["Document"].get("HistoryExitReason") != "success":
                record_path(run_dir, scene.id).unlink(missing_ok=True)
    (run_dir / RECORDS).mkdir(parents=True, exist_ok=True)
    (run_dir / STATES).mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / RUN_FILE, json.dumps({"RunId": run_id, "Scenes": [s.id for s in scenes]}) + "\n")


def _pinger(broker_url: str) -> Callable[[], None]:
    import redis

    client = redis.Redis.from_url(broker_url, socket_timeout=PING_TIMEOUT_S, socket_connect_timeout=PING_TIMEOUT_S)

    def ping() -> None:
        client.ping()

    return ping


def _wait(
    request: SubmitRequest, run_id: str, scenes: list[Scene], ping: Callable[[], None], notify: Notify
) -> SubmitFailure | None:
    """Until every scene has its record; a failure when the broker stays away for the bound."""
    seen: set[str] = set()
    lost_since: float | None = None
    last_ping = 0.0
    quiet_since = time.monotonic()
    while True:
        for scene in scenes:
            if scene.id in seen:
                continue
            record = read_record(record_path(request.out, scene.id), run_id)
            if record is not None:
                seen.add(scene.id)
                quiet_since = time.monotonic()
                notify(_scene_event(record))
        if time.monotonic() - quiet_since >= QUIET_NOTICE_S:
            quiet_since = time.monotonic()
            waiting = len(scenes) - len(seen)
            notify(
                {
                    "event": "waiting",
                    "unfinished": waiting,
                    "message": f"{waiting} scene(s) unfinished, none "
                    f"ended in the last {QUIET_NOTICE_S:g} s; `farm status` shows whether a worker runs them",
                }
            )
        if len(seen) == len(scenes):
            return None
        if time.monotonic() - last_ping >= 1.0:
            last_ping = time.monotonic()
            try:
                ping()
                lost_since = None
            except Exception as exc:
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since >= request.broker_loss_bound_s:
                    return SubmitFailure(
                        f"broker {redact_url(request.broker)} unreachable for {request.broker_loss_bound_s:g} s "
                        f"({redact_text(str(exc), request.broker)}); {len(scenes) - len(seen)} scene(s) unfinished; "
                        "run `farm submit --resume` when it is back",
                        EXIT_BROKER_UNREACHABLE,
                    )
        time.sleep(request.poll_interval_s)


def _scene_event(record: dict[str, Any]) -> dict[str, Any]:
    doc = record["Document"]
    ok = doc.get("HistoryExitReason") == "success" and bool(doc.get("Frames"))
    return {
        "event": "scene_end",
        "scene": record.get("SceneId"),
        "prompt_id": doc.get("PromptId"),
        "exit_reason": doc.get("HistoryExitReason"),
        "ok": ok,
        "detail": doc.get("ExitDetail"),
        "forced_copy": doc.get("ForcedCopyTriggered"),
        "server": doc.get("ServerUrl"),
        "instance_id": doc.get("ServerInstanceId"),
        "worker": record.get("Worker"),
    }


def _finish(request: SubmitRequest, run_id: str, scenes: list[Scene], *, queued: int) -> SubmitResult:
    result = SubmitResult(run_id, request.out, queued=queued)
    for scene in scenes:
        record = read_record(record_path(request.out, scene.id), run_id)
        assert record is not None  # _wait returned only when every scene had one
        doc = record["Document"]
        result.scenes.append(SceneOutcome(scene.id, doc.get("PromptId"), doc["HistoryExitReason"], doc))
    versions = [d.document.get("Versions", {}).get("ComfyUI") for d in result.scenes]
    metadata = build_run_metadata(
        [s.document for s in result.scenes],
        run_id=run_id,
        writer="runner",
        comfyui_version=next((v for v in versions if isinstance(v, str)), None),
    )
    result.servers = stats_from_documents(s.document for s in result.scenes)
    metadata["Servers"] = [stats.contract() for stats in result.servers]  # run-summary.txt: one line each
    write_run(request.out, metadata)
    report = validate_run(request.out)
    result.validation_ok, result.validation_report = bool(report.ok), report.to_dict()
    return result
