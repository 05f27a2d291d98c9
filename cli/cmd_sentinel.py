"""``scene-telemetry sentinel``: done markers for graphs without WriteDoneMarker (and ``sentinel install``)."""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from .. import sentinel
from ..sentinel import DEFAULT_QUIET_S, STATE_NAME
from ..telemetry import InvalidInputError
from ._args import server_url
from ._console import emit, error
from ._monitor_options import add_monitoring_arguments, open_monitor

if TYPE_CHECKING:
    from ..monitoring import Monitor

EXIT_OK = 0
EXIT_USAGE = 2
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
STOP_GRACE_S = 0.5
"""A stopping service gives queued webhook events at most this long; ``--once`` gives them the monitor's
usual grace. Marker events go out as markers are written, so little is ever queued at the end."""
STOP_BUDGET_S = 1.0
"""After SIGTERM/SIGINT, that grace ends at the latest this long after the signal: the service itself may
take 1.5 s to stop (a request to a stalled server) and the process must be gone within 2 s."""


class _Service(Protocol):
    def run(self, *, once: bool = False) -> int: ...
    def stop(self) -> None: ...


def _quiet(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or value > 86400:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds from 0 to 86400")
    return value


def add_run_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """The options of a sentinel run (shared with ``install``, which checks the service's command line)."""
    parser.add_argument("--output-dir", required=required, help="ComfyUI's output directory (as this machine sees it)")
    parser.add_argument("--server", type=server_url, help="follow this ComfyUI server's finished prompts")
    parser.add_argument(
        "--poll", action="store_true", help="poll instead of file events (with --server: instead of the websocket)"
    )
    parser.add_argument(
        "--quiet-seconds",
        type=_quiet,
        default=DEFAULT_QUIET_S,
        help=f"filesystem mode: a batch is marked after this long without changes (default {DEFAULT_QUIET_S:g})",
    )
    parser.add_argument("--state", help=f"state journal (default OUTPUT_DIR/{STATE_NAME})")
    parser.add_argument("--once", action="store_true", help="mark what is pending, then exit (cron)")
    add_monitoring_arguments(parser)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sentinel",
        help="write .done markers for graphs without WriteDoneMarker (a long-running service)",
        description="Watch an output directory (or follow a ComfyUI server with --server) and write a contract-v1 "
        "done marker with Source 'sentinel' for each finished batch. 'sentinel install' writes a service "
        "definition that keeps it running.",
    )
    add_run_arguments(parser, required=False)
    parser.set_defaults(func=run)
    sub = parser.add_subparsers(dest="sentinel_command", metavar="install")
    _register_install(sub)


def _register_install(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "install",
        help="write (or print) a service definition that keeps the sentinel running",
        description="Writes a systemd unit, launchd plist, Task Scheduler XML or NSSM script with the exact "
        "command line, then prints the one command that enables it (never runs it). Sentinel options go "
        "after '--', e.g.: sentinel install --systemd --user -- --output-dir /srv/comfy/output",
    )
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--systemd", action="store_const", const="systemd", dest="kind", help="a systemd unit")
    kind.add_argument("--launchd", action="store_const", const="launchd", dest="kind", help="a launchd agent")
    kind.add_argument(
        "--windows-task", action="store_const", const="windows-task", dest="kind", help="a Task Scheduler XML"
    )
    kind.add_argument("--nssm", action="store_const", const="nssm", dest="kind", help="NSSM service commands")
    parser.add_argument("--user", action="store_true", help="systemd: a user unit (~/.config/systemd/user)")
    parser.add_argument("--print", action="store_true", dest="print_only", help="print the definition, write nothing")
    parser.add_argument("--dest", help="write the definition here instead of its usual place")
    parser.add_argument("sentinel_args", nargs=argparse.REMAINDER, help="'--' then the sentinel's own options")
    parser.set_defaults(func=run_install)


def _configure_logging() -> None:
    """One timestamped line per event; INFO for the sentinel (each marker is logged) even without -v."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    sentinel_logger = logging.getLogger(sentinel.__name__)
    if sentinel_logger.getEffectiveLevel() > logging.INFO:
        sentinel_logger.setLevel(logging.INFO)


@contextmanager
def _stop_on_signals(service: _Service, signalled: list[float]) -> Iterator[None]:
    """SIGTERM/SIGINT (and SIGBREAK on Windows) ask the service to stop; the old handlers come back after.
    The first signal's time (monotonic) is appended to *signalled*."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = ("SIGTERM", "SIGINT", "SIGBREAK")
    wanted = [getattr(signal, n) for n in names if hasattr(signal, n)]

    def handler(signum: int, frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %d: stopping", signum)
        if not signalled:
            signalled.append(time.monotonic())
        service.stop()

    previous = {s: signal.signal(s, handler) for s in wanted}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def build_service(args: argparse.Namespace, monitor: Monitor | None = None) -> _Service:
    """The sentinel the arguments describe (raises InvalidInputError for a bad output dir or state file).

    With a *monitor*, each marker written is counted and posted, and server mode reports whether the
    server answered (``scene_telemetry_server_up``)."""
    output = Path(os.path.abspath(args.output_dir))
    state = Path(os.path.abspath(args.state)) if args.state else output / STATE_NAME
    journal = sentinel.Journal.load(state)
    journal.check_writable()
    on_marker = None
    if monitor is not None:

        def on_marker(path: Path, document: Mapping[str, Any]) -> None:
            monitor.marker_written(document, path=str(path))

    if args.server:
        on_server = None if monitor is None else functools.partial(monitor.server_up, args.server)
        return sentinel.ServerSentinel(
            args.server, output, journal, use_events=not args.poll, on_marker=on_marker, on_server=on_server
        )
    return sentinel.FsSentinel(
        output, journal, quiet_s=args.quiet_seconds, poll=True if args.poll else None, on_marker=on_marker
    )


def service_command(sentinel_args: list[str]) -> list[str]:
    """The exact command a service runs: this interpreter, ``-m scene_telemetry.cli sentinel`` and the
    options, normalised (absolute paths: a service does not start in the user's folder).

    Raises InvalidInputError for options the sentinel would refuse, and for ``--once`` (a service runs on).
    """
    args = list(sentinel_args)
    if args and args[0] == "--":
        args = args[1:]
    parser = argparse.ArgumentParser(prog="scene-telemetry sentinel", add_help=False, exit_on_error=False)
    add_run_arguments(parser, required=True)
    try:
        ns, unknown = parser.parse_known_args(args)
    except (argparse.ArgumentError, argparse.ArgumentTypeError) as exc:
        raise InvalidInputError(f"sentinel options: {exc}") from None
    except SystemExit:  # a missing --output-dir: argparse exits even with exit_on_error=False
        raise InvalidInputError("sentinel options: --output-dir is required (after '--')") from None
    if unknown:
        raise InvalidInputError(f"sentinel options: unrecognised {' '.join(unknown)}")
    if ns.once:
        raise InvalidInputError("--once is for cron; a service keeps running (drop --once)")
    unsafe = [a for a in args if any(ord(c) < 32 or ord(c) == 127 for c in a)]
    if unsafe:  # a line break in a unit file or .cmd script starts a directive or command of its own
        raise InvalidInputError(f"sentinel options: {unsafe[0]!r} holds a line break or control character")
    command = [sys.executable, "-m", f"{_package_root()}.cli", "sentinel"]
    command += ["--output-dir", os.path.abspath(ns.output_dir)]
    if ns.server:
        command += ["--server", ns.server]
    if ns.poll:
        command.append("--poll")
    if ns.quiet_seconds != DEFAULT_QUIET_S:
        command += ["--quiet-seconds", f"{ns.quiet_seconds:g}"]
    if ns.state:
        command += ["--state", os.path.abspath(ns.state)]
    if ns.metrics_port is not None:
        command += ["--metrics-port", str(ns.metrics_port)]
    for url in ns.webhook:
        command += ["--webhook", url]
    return command


def _package_root() -> str:
    return (__package__ or "scene_telemetry.cli").rsplit(".", 1)[0]


def run_install(args: argparse.Namespace) -> int:
    try:
        command = service_command(args.sentinel_args)
    except InvalidInputError as exc:
        error(str(exc))
        return EXIT_USAGE
    if args.user and args.kind != "systemd":
        error("--user applies to --systemd only")
        return EXIT_USAGE
    dest = Path(os.path.abspath(args.dest)) if args.dest else None
    if args.kind == "systemd":
        definition = sentinel.systemd_unit(command, user=args.user, path=dest)
    elif args.kind == "launchd":
        definition = sentinel.launchd_plist(command, path=dest)
    elif args.kind == "windows-task":
        definition = sentinel.windows_task_xml(command, path=dest)
    else:
        definition = sentinel.nssm_commands(command, path=dest)
    if args.print_only:
        emit(definition.text.rstrip("\r\n").replace("\r\n", "\n"))
        emit(f"# then enable it with: {definition.enable_command}", stream=sys.stderr)
        return EXIT_OK
    try:
        written = sentinel.write_definition(definition)
    except OSError as exc:
        error(f"cannot write {definition.path}: {exc.strerror or exc}")
        return EXIT_USAGE
    emit(f"wrote {written}")
    emit(f"enable it with: {definition.enable_command}")
    return EXIT_OK


def _run_service(args: argparse.Namespace, monitor: Monitor, signalled: list[float]) -> int | None:
    """Build and run the service; None (after one error line) when the arguments are refused."""
    try:
        service = build_service(args, monitor)
    except InvalidInputError as exc:
        error(str(exc))
        return None
    with _stop_on_signals(service, signalled):
        return service.run(once=args.once)


def _close_monitor(monitor: Monitor, *, once: bool, signalled: list[float]) -> None:
    """Close the monitor within the stop budget (never lets a receiver delay a SIGTERM past 2 s)."""
    if once and not signalled:
        monitor.close()  # cron: the events of this pass get the usual grace
        return
    grace = STOP_GRACE_S
    if signalled:
        grace = min(grace, max(0.0, STOP_BUDGET_S - (time.monotonic() - signalled[0])))
    monitor.close(grace_s=grace)


def run(args: argparse.Namespace) -> int:
    if args.output_dir is None:
        error("sentinel: --output-dir is required")
        return EXIT_USAGE
    if not os.path.isdir(args.output_dir):
        error(f"sentinel: output directory {args.output_dir} does not exist or is not a folder")
        return EXIT_USAGE
    if args.state and os.path.isdir(args.state):
        error(f"sentinel: --state {args.state} is a folder; name a file")
        return EXIT_USAGE
    _configure_logging()
    monitor = open_monitor(args, source="sentinel")
    if isinstance(monitor, str):
        error(f"sentinel: {monitor}")
        return EXIT_USAGE
    signalled: list[float] = []
    try:
        written = _run_service(args, monitor, signalled)
    finally:
        _close_monitor(monitor, once=args.once, signalled=signalled)
    if written is None:
        return EXIT_USAGE
    if args.once:
        emit(f"sentinel: {written} marker(s) written")
    return EXIT_OK
