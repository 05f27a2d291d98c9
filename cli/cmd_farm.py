"""``scene-telemetry farm worker|submit|status``: scenes over many machines with Celery and a Redis broker.

Needs the ``[farm]`` extra (``pip install scene-telemetry[farm]``); without it each command is one line
and exit 2. Broker URLs are printed and logged with their credentials replaced by ``***``.

``submit`` exits with ``run``'s codes: 0 all ok, 2 usage, 10 broker unreachable (at the start, or for
10 s while waiting), 20 a scene failed, 21 the run folder failed validation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..runner.policy import add_policy_arguments, policy_from_args
from ..telemetry import InvalidInputError
from ._args import server_url
from ._console import emit, emit_json, error
from ._farm_run import positive_seconds
from ._monitor_options import add_monitoring_arguments

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SCENES_FAILED = 20
EXIT_RUN_INVALID = 21
NO_CELERY = "the farm needs Celery: pip install 'scene-telemetry[farm]'"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "farm",
        help="scenes over many machines: Celery workers in front of ComfyUI servers, a Redis broker",
        description="worker: serve one ComfyUI server; submit: queue a run and follow it; status: the queue and "
        "each worker. Exit codes of submit are run's (10: broker unreachable).",
    )
    commands = parser.add_subparsers(dest="farm_command", metavar="COMMAND", required=True)
    _register_worker(commands)
    _register_submit(commands)
    _register_status(commands)


BROKER_SCHEMES = ("redis", "rediss")


def broker_url(text: str) -> str:
    """argparse ``type=`` for ``--broker``: a Redis URL; the error shows it with its credentials hidden.

    Any other scheme (``amqp://``, a typo) would otherwise reach the Redis client and read as an
    unreachable broker (exit 10) instead of a usage error.
    """
    import urllib.parse

    from ..farm.redact import redact_url

    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0-65535
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"broker URL {redact_url(text)} is malformed: {exc}") from None
    if parts.scheme not in BROKER_SCHEMES or not parts.hostname:
        got = f"{parts.scheme}://" if parts.scheme else "no scheme"  # the rest may be a mistyped password
        raise argparse.ArgumentTypeError(f"broker URL must be redis://[:password@]host[:port]/db, got {got}")
    return text


def _broker_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker", type=broker_url, required=True, metavar="URL", help="redis://[:password@]host:6379/0"
    )


def _register_worker(commands: Any) -> None:
    parser = commands.add_parser("worker", help="run scenes from the broker on one ComfyUI server")
    _broker_argument(parser)
    parser.add_argument("--server", type=server_url, default="http://127.0.0.1:8188", help="this worker's ComfyUI")
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="this machine's mount of the shared folder holding the run folders (default: the submitter's paths)",
    )
    parser.add_argument(
        "--visibility-timeout-seconds",
        type=positive_seconds,
        metavar="S",
        help="the broker hands an unacknowledged scene of a lost worker to another after S (default: 1.5 x the "
        "default policy's scene worst case)",
    )
    parser.add_argument(
        "--server-grace-seconds",
        type=positive_seconds,
        default=60.0,
        metavar="S",
        help="refused connections for this long mean the server is lost (serverLost: the scene goes back to the "
        "queue); default %(default)g",
    )
    add_monitoring_arguments(parser)
    parser.set_defaults(func=_worker)


def _register_submit(commands: Any) -> None:
    parser = commands.add_parser("submit", help="queue every scene of a list, follow them, write the run folder")
    parser.add_argument("workflow", help="API-format workflow (JSON)")
    parser.add_argument("--scenes", required=True, metavar="FILE", help="scene list (JSON or YAML)")
    parser.add_argument("--mapping", metavar="FILE", help="scene field → node input mapping (JSON or YAML)")
    _broker_argument(parser)
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder, on storage every worker sees")
    parser.add_argument("--run-id", help="run id (default: new; --resume reads it from RUN_DIR)")
    parser.add_argument("--resume", action="store_true", help="keep finished scenes, queue the others again")
    parser.add_argument("--no-gpu", action="store_true", help="skip the server-side GPU snapshots")
    parser.add_argument("--json", action="store_true", help="machine-readable events and result on stdout")
    add_policy_arguments(parser)
    parser.set_defaults(func=_submit)


def _register_status(commands: Any) -> None:
    parser = commands.add_parser("status", help="queued scenes, and what each worker runs and has finished")
    _broker_argument(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(func=_status)


def _celery_missing() -> bool:
    try:
        import celery  # noqa: F401
    except ImportError:
        error(NO_CELERY)
        return True
    return False


def _default_visibility() -> float:
    from ..farm.celery_app import visibility_timeout_for
    from ..runner.policy import QueuePolicy

    return visibility_timeout_for(QueuePolicy())


def _worker(args: argparse.Namespace) -> int:
    if _celery_missing():
        return EXIT_USAGE
    from ..farm.worker import WorkerFailure, broker_refusal, identify_server, run_worker

    if args.out is not None and not Path(args.out).is_dir():  # else every scene would fail on the worker
        error(f"--out {args.out}: not a directory (this machine's mount of the shared run folders)")
        return EXIT_USAGE
    port_problem = _metrics_port_problem(args.metrics_port)
    if port_problem is not None:  # the pool process binds it later, where a refusal was only a log line
        error(port_problem)
        return EXIT_USAGE
    refusal = broker_refusal(args.broker)
    if refusal is not None:
        error(refusal)
        return EXIT_USAGE
    server = identify_server(args.server)
    if isinstance(server, WorkerFailure):
        error(server.reason)
        return server.exit_code
    emit(f"farm worker: {server.label} ({server.instance_id}, {server.device or 'no device'})", stream=sys.stderr)
    return run_worker(
        args.broker,
        server,
        out_root=args.out,
        server_grace_s=args.server_grace_seconds,
        visibility_timeout_s=args.visibility_timeout_seconds or _default_visibility(),
        loglevel="INFO" if args.verbose else "WARNING",
        metrics_port=args.metrics_port,
        webhooks=tuple(args.webhook),
    )


def _metrics_port_problem(port: int | None) -> str | None:
    """Why ``--metrics-port`` cannot be served (None: it can), tried here as the exposition will bind it."""
    import socket

    if port is None:
        return None
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server binds
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            return f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}"
    return None


def _submit(args: argparse.Namespace) -> int:
    if _celery_missing():
        return EXIT_USAGE
    from ..farm.submit import SubmitFailure, SubmitRequest, submit_run

    try:
        request = SubmitRequest(
            workflow=args.workflow,
            scenes=args.scenes,
            broker=args.broker,
            out=Path(args.out),
            policy=policy_from_args(args),
            mapping=args.mapping,
            run_id=args.run_id,
            resume=args.resume,
            gpu_snapshots=not args.no_gpu,
        )
    except InvalidInputError as exc:
        error(str(exc))
        return EXIT_USAGE
    result = submit_run(request, notify=lambda event: _progress(args, event))
    if isinstance(result, SubmitFailure):
        if args.json:
            emit_json({"event": "failed", "reason": result.reason, "exit_code": result.exit_code})
        error(result.reason)
        return result.exit_code
    failed = not all(s.ok for s in result.scenes)
    code = EXIT_OK if result.ok else (EXIT_SCENES_FAILED if failed else EXIT_RUN_INVALID)
    servers = [s.as_dict() for s in result.servers]
    if args.json:
        emit_json(
            {
                "event": "result",
                "run_id": result.run_id,
                "run_dir": str(result.run_dir),
                "ok": result.ok,
                "exit_code": code,
                "validation_ok": result.validation_ok,
                "servers": servers,
                "scenes": [
                    {
                        "scene": s.scene_id,
                        "exit_reason": s.exit_reason,
                        "ok": s.ok,
                        "server": s.document.get("ServerUrl"),
                    }
                    for s in result.scenes
                ],
            }
        )
    else:
        for stats in result.servers:
            emit(stats.line())
        verdict = "ok" if result.ok else ("scene(s) failed" if failed else "validation failed")
        emit(f"run {result.run_id}: {verdict}; run folder {result.run_dir}")
    return code


def _progress(args: argparse.Namespace, event: dict[str, Any]) -> None:
    if args.json:
        emit_json(event)
    elif event.get("event") == "submitted":
        emit(f"run {event['run_id']}: {event['queued']} scene(s) queued, {event['kept']} kept", stream=sys.stderr)
    elif event.get("event") in ("warning", "waiting"):
        emit(f"{event['event']}: {event.get('message')}", stream=sys.stderr)
    elif event.get("event") == "scene_end":
        where = f" on {event.get('server')}" if event.get("server") else ""
        detail = f": {event.get('detail')}" if event.get("detail") and not event.get("ok") else ""
        emit(f"{event.get('scene')}: {event.get('exit_reason')}{where}{detail}", stream=sys.stderr)


def _status(args: argparse.Namespace) -> int:
    if _celery_missing():
        return EXIT_USAGE
    from ..farm.inspect import farm_status
    from ..farm.redact import redact_text, redact_url

    try:
        status = farm_status(args.broker, visibility_timeout_s=_default_visibility())
    except Exception as exc:  # redis-py / kombu connection errors
        error(f"broker {redact_url(args.broker)} unreachable: {redact_text(str(exc), args.broker)}")
        return 10
    if args.json:
        emit_json(status.as_dict())
        return EXIT_OK
    emit(f"queued: {len(status.queued)} scene(s){': ' + ', '.join(status.queued) if status.queued else ''}")
    if not status.workers:
        emit("no worker answered within 1 s")
    for worker in status.workers:
        emit(worker.line())
    return EXIT_OK
