"""``scene-telemetry run``: run a scene list through a ComfyUI server, headless.

Exit codes (also in docs/runner.md):

====  ==========================================================================
0     every scene succeeded (verified or runner-forced marker) and the run folder validates
2     bad command line, policy value or input file (workflow, scenes, mapping), or an unwritable ``--out``
10    the server did not answer ``/system_stats`` (3 tries, 500 ms apart)
11    the server lacks node classes the workflow needs (or this pack)
12    ``/object_info`` failed
13    the workflow or mapping does not fit ``/object_info``; nothing was queued
20    at least one scene did not succeed (its ``HistoryExitReason`` says why)
21    every scene succeeded but the run folder failed validation
====  ==========================================================================
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..comfy_api.preflight import DEFAULT_MIN_FREE_VRAM_MB, DEFAULT_PREFLIGHT_BUDGET_S
from ..runner.policy import add_policy_arguments, describe_policy, policy_from_args
from ..telemetry import InvalidInputError
from ._args import server_url
from ._console import emit, emit_json, error
from ._farm_run import DEFAULT_SERVER, add_farm_arguments, resolve_servers, run_farm_command
from ._monitor_options import RunEvents, add_monitoring_arguments, open_monitor

if TYPE_CHECKING:
    from ..monitoring import Monitor
    from ..runner.outcomes import RunResult
    from ..runner.prepare import PreparedRun, PrepareFailure, RunRequest

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SERVER_UNREACHABLE = 10
EXIT_SCENES_FAILED = 20
EXIT_RUN_INVALID = 21

PROGRESS_MIN_INTERVAL_S = 0.2
"""A terminal line per sampler step would flood; redraw at most this often."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a workflow for every scene of a list on a ComfyUI server (headless)",
        description="Validate the workflow and mapping against the server, queue each scene with its own "
        "prompt_id, wait for completion and its done marker within the queue policy, and write a run folder "
        "(artifact-metadata.json, run-summary.txt). Exit codes: 0 all ok, 2 usage, 10 server unreachable, "
        "11 node classes missing, 12 /object_info failed, 13 workflow/mapping invalid, 20 a scene failed, "
        "21 run folder invalid.",
    )
    parser.add_argument(
        "workflow",
        help="workflow (JSON): API format, or the editor's format (converted with the server's /object_info)",
    )
    parser.add_argument("--scenes", required=True, metavar="FILE", help="scene list (JSON or YAML)")
    parser.add_argument("--mapping", metavar="FILE", help="scene field → node input mapping (JSON or YAML)")
    parser.add_argument(
        "--server",
        type=server_url,
        action="append",
        default=[],
        help=f"ComfyUI URL (default {DEFAULT_SERVER}); repeat it to run the scenes over several servers (a farm)",
    )
    add_farm_arguments(parser)
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to write")
    parser.add_argument("--run-id", help="run id (default: run-<UTC time>-<random>; --resume reads it from RUN_DIR)")
    parser.add_argument(
        "--comfy-output-dir",
        metavar="DIR",
        help="ComfyUI's output folder when it is on this machine (markers via file events; else via /view)",
    )
    parser.add_argument("--resume", action="store_true", help="continue RUN_DIR: keep finished scenes, re-attach")
    parser.add_argument(
        "--min-free-vram-mb",
        type=float,
        default=DEFAULT_MIN_FREE_VRAM_MB,
        help="warn below this much free VRAM (default %(default)g, 0 = off)",
    )
    parser.add_argument("--no-gpu", action="store_true", help="skip the server-side GPU snapshots")
    parser.add_argument(
        "--preflight-budget-seconds",
        type=_budget,
        default=DEFAULT_PREFLIGHT_BUDGET_S,
        metavar="S",
        help="all of preflight (/system_stats tries, /object_info) ends within S seconds (default %(default)g)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable events and result on stdout")
    parser.add_argument("--report", action="store_true", help="write RUN_DIR/report.html at the end (see 'report')")
    add_policy_arguments(parser)
    add_monitoring_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..runner.prepare import RunRequest

    try:
        servers = resolve_servers(args)
        args.server = servers[0]
        request = RunRequest(
            workflow=args.workflow,
            scenes=args.scenes,
            server=args.server,
            out=Path(args.out),
            policy=policy_from_args(args),
            mapping=args.mapping,
            run_id=args.run_id,
            comfy_output_dir=args.comfy_output_dir,
            resume=args.resume,
            min_free_vram_mb=args.min_free_vram_mb,
            gpu_snapshots=not args.no_gpu,
            preflight_budget_s=args.preflight_budget_seconds,
        )
    except InvalidInputError as exc:
        return _fail(args, _failure(str(exc)))
    monitor = open_monitor(args, source="run")
    if isinstance(monitor, str):
        return _fail(args, _failure(monitor))
    started = time.monotonic()
    code, result = EXIT_USAGE, None
    try:
        if len(servers) > 1:
            code, result = run_farm_command(args, request, servers, monitor)
        else:
            code, result = _run_monitored(args, request, monitor)
    finally:  # the run's exit code and duration are fixed before any webhook is waited for
        scenes = result.scenes if result is not None else []
        monitor.run_ended(
            run_id=result.run_id if result is not None else args.run_id,
            exit_code=code,
            scenes=len(scenes),
            failed=sum(1 for s in scenes if not s.ok),
            duration_seconds=round(time.monotonic() - started, 3),
            run_dir=str(result.run_dir) if result is not None else str(request.out),
        )
        monitor.close()
    return code


def _run_monitored(args: argparse.Namespace, request: RunRequest, monitor: Monitor) -> tuple[int, RunResult | None]:
    """Prepare and run; every scene end goes to the monitor (metrics, webhooks) as it happens."""
    from ..runner.prepare import PrepareFailure, prepare_run
    from ..runner.runner import Runner

    prepared = prepare_run(
        request, warn=lambda text: _say(args, {"event": "warning", "message": text}, f"warning: {text}")
    )
    if isinstance(prepared, PrepareFailure):
        monitor.server_up(args.server, prepared.exit_code != EXIT_SERVER_UNREACHABLE)
        return _fail(args, prepared), None
    monitor.server_up(args.server, True)
    _announce(args, prepared)
    events = RunEvents(Progress(args.json, prepared.workflow), monitor, args.server, prepared.options.run_id)
    try:
        runner = Runner(prepared.client, prepared.workflow, prepared.mapping, prepared.options, on_event=events)
    except InvalidInputError as exc:  # --resume on a state file of another run, or an unreadable one
        return _fail(args, PrepareFailure("resume", str(exc), EXIT_USAGE)), None
    events.documents = lambda scene_id: runner.state.scenes.get(scene_id, {}).get("Document")
    result = runner.run(prepared.scenes)
    code = EXIT_OK if result.ok else (EXIT_SCENES_FAILED if not all(s.ok for s in result.scenes) else EXIT_RUN_INVALID)
    page = _write_report(args, result.run_dir, prepared.options.comfy_output_dir) if args.report else None
    _report(args, result, code, page)
    return code, result


def _announce(args: argparse.Namespace, prepared: PreparedRun) -> None:
    options, worst = prepared.options, prepared.worst_case_s
    policy = options.policy
    _say(
        args,
        {
            "event": "run_start",
            "run_id": options.run_id,
            "scenes": len(prepared.scenes),
            "policy": policy.as_dict(),
            "scene_worst_case_seconds": round(worst, 3),
            "preflight_budget_seconds": args.preflight_budget_seconds,
        },
        f"run {options.run_id}: {len(prepared.scenes)} scene(s), {describe_policy(policy)}; "
        f"preflight within {args.preflight_budget_seconds:g} s, each scene ends within {worst:g} s",
    )


def _report(
    args: argparse.Namespace, result: RunResult, code: int, page: Path | None, extra: dict[str, Any] | None = None
) -> None:
    """The run's last line, or (``--json``) its result object; *extra* adds fields to that object (a farm's servers)."""
    if not args.json:
        verdict = "ok" if result.ok else ("scene(s) failed" if code == EXIT_SCENES_FAILED else "validation failed")
        emit(f"run {result.run_id}: {verdict}; run folder {result.run_dir}")
        if page is not None:
            emit(f"report: {page}")
        return
    emit_json(
        {
            "event": "result",
            "run_id": result.run_id,
            "run_dir": str(result.run_dir),
            "ok": result.ok,
            "exit_code": code,
            "validation_ok": result.validation_ok,
            "report": str(page) if page is not None else None,
            "scenes": [
                {
                    "scene": s.scene_id,
                    "prompt_id": s.prompt_id,
                    "exit_reason": s.exit_reason,
                    "ok": s.ok,
                    "detail": s.document.get("ExitDetail"),
                    "forced_copy": s.document.get("ForcedCopyTriggered"),
                }
                for s in result.scenes
            ],
            **(extra or {}),
        }
    )


def _write_report(args: argparse.Namespace, run_dir: Path, output_dir: Path | None) -> Path | None:
    """``--report``: the run's HTML page; not writing it is a warning and leaves the run's exit code alone."""
    from ..report import NothingReadable, write_report

    try:
        return write_report(run_dir, output_dir=output_dir).path
    except (NothingReadable, OSError) as exc:
        _say(args, {"event": "warning", "message": f"report not written: {exc}"}, f"warning: report not written: {exc}")
        return None


def _say(args: argparse.Namespace, event: dict[str, Any], text: str) -> None:
    if args.json:
        emit_json(event)
    else:
        emit(text, stream=sys.stderr)


def _budget(text: str) -> float:
    """A finite number of seconds > 0 (``--preflight-budget-seconds``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds > 0")
    return value


def _failure(reason: str) -> PrepareFailure:
    """A usage error found by the command itself (policy values, monitoring options) as a PrepareFailure."""
    from ..runner.prepare import PrepareFailure

    return PrepareFailure("usage", reason, EXIT_USAGE)


def _fail(args: argparse.Namespace, failure: PrepareFailure) -> int:
    """Print why the run did not start and return its exit code; with --json, the ``result`` event too.

    ``--json`` is one contract for every outcome: a run that never started also ends with
    ``{"event": "result", "ok": false, "exit_code", "stage", "reason", "problems", "scenes": []…}``.
    """
    for problem in failure.problems:
        error(problem)
    error(failure.reason)
    if args.json:
        emit_json(
            {
                "event": "result",
                "run_id": args.run_id,
                "run_dir": str(args.out),
                "ok": False,
                "exit_code": failure.exit_code,
                "validation_ok": None,
                "report": None,
                "scenes": [],
                "stage": failure.stage,
                "reason": failure.reason,
                "problems": list(failure.problems),
            }
        )
    return failure.exit_code


class Progress:
    """Runner events → terminal lines (stderr, redrawn) or JSON lines (stdout); quiet in CI and pipes."""

    def __init__(self, json_mode: bool, workflow: dict[str, Any], *, interactive: bool | None = None) -> None:
        self.json_mode = json_mode
        self.workflow = workflow
        self.interactive = _interactive() if interactive is None else interactive
        self._last_draw = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("event") == "ws":
            self._ws(str(event.get("scene")), event.get("message") or {})
        elif self.json_mode:
            emit_json(event)
        elif event.get("event") in ("scene_start", "scene_end", "retry", "scene_skipped"):
            emit(_describe(event), stream=sys.stderr)

    def _ws(self, scene: str, message: dict[str, Any]) -> None:
        kind, data = message.get("type"), message.get("data") or {}
        if kind == "progress":
            line = {
                "event": "progress",
                "scene": scene,
                "node": data.get("node"),
                "value": data.get("value"),
                "max": data.get("max"),
            }
        elif kind == "executing" and data.get("node"):
            line = {"event": "executing", "scene": scene, "node": data.get("node")}
        else:
            return
        if self.json_mode:
            emit_json(line)
        elif self.interactive and time.monotonic() - self._last_draw >= PROGRESS_MIN_INTERVAL_S:
            self._last_draw = time.monotonic()
            node = str(line["node"])
            cls = (self.workflow.get(node) or {}).get("class_type", "?")
            step = f" {line['value']}/{line['max']}" if kind == "progress" else ""
            sys.stderr.write(f"\r\x1b[2K{scene}: node {node} ({cls}){step}")
            sys.stderr.flush()


def _describe(event: dict[str, Any]) -> str:
    scene = event.get("scene")
    where = f" on {event['server']}" if event.get("server") else ""  # a farm run names the server
    if event["event"] == "scene_start":
        return f"\r\x1b[2K{scene}: queued{where}" if _interactive() else f"{scene}: queued{where}"
    if event["event"] == "retry":
        elsewhere = " elsewhere" if event.get("elsewhere") else ""
        return f"{scene}: {event.get('reason')}{where}, retry {event.get('retry')}{elsewhere}"
    if event["event"] == "scene_skipped":
        return f"{scene}: skipped ({event.get('reason')})"
    forced = " (runner-forced marker)" if event.get("forced_copy") else ""
    detail = f": {event.get('detail')}" if event.get("detail") and not event.get("ok") else ""
    prefix = "\r\x1b[2K" if _interactive() else ""
    return f"{prefix}{scene}: {event.get('exit_reason')}{where}{forced}{detail}"


def _interactive() -> bool:
    """A terminal that is not CI: progress redraws; otherwise one line per scene event."""
    return sys.stderr.isatty() and not os.environ.get("CI")
