"""``run`` with several servers (``--server URL --server URL …`` or ``--servers FILE``): the in-process farm.

Same inputs, outputs and exit codes as a single-server run; the differences are the per-server lines (left
out, quarantined, counts at the end) and the ``servers`` list in ``--json``'s result.
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import TYPE_CHECKING, Any

from ..telemetry import InvalidInputError
from ._console import emit

if TYPE_CHECKING:
    from ..monitoring import Monitor
    from ..runner.outcomes import RunResult
    from ..runner.prepare import RunRequest

DEFAULT_SERVER = "http://127.0.0.1:8188"


def positive_int(text: str) -> int:
    """argparse ``type=`` for counts that must be at least 1."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text}")
    return value


MAX_PER_SERVER = 64
"""A ComfyUI server runs one prompt at a time; each slot is a thread with its own websocket, so a count such as
100000 would start that many threads per server instead of queueing deeper."""


def per_server_count(text: str) -> int:
    """argparse ``type=`` for ``--per-server``: 1 to :data:`MAX_PER_SERVER`."""
    value = positive_int(text)
    if value > MAX_PER_SERVER:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_PER_SERVER}, got {value}")
    return value


def add_farm_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("several servers (a farm in this process)")
    group.add_argument("--servers", metavar="FILE", help="server URLs, one a line (# comments), added to --server")
    group.add_argument(
        "--per-server", type=per_server_count, default=1, metavar="N", help="scenes in flight per server (default 1)"
    )
    group.add_argument(
        "--quarantine-after",
        type=positive_int,
        default=3,
        metavar="K",
        help="quarantine a server after K failed scenes in a row (default %(default)s)",
    )
    group.add_argument(
        "--probe-interval-seconds",
        type=positive_seconds,
        default=30.0,
        metavar="S",
        help="probe a quarantined server this often (default %(default)g s)",
    )


_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def _same_server_key(url: str) -> tuple[str, str, int, str]:
    """What makes two spellings of a URL one server: ``HTTP://LocalHost:80/`` is ``http://127.0.0.1``.

    Listing a server twice would double its slots and split its failure count (quarantine), so the
    scheme and host are compared without case, the default port filled in, and loopback names merged.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, "loopback" if host in _LOOPBACK else host, port, parts.path.rstrip("/")


def resolve_servers(args: argparse.Namespace) -> list[str]:
    """``--server`` values then ``--servers FILE`` lines, duplicates dropped; the default when none is given."""
    from ..farm.servers import load_servers_file

    urls: list[str] = list(args.server or [])
    if getattr(args, "servers", None):
        urls += load_servers_file(args.servers)
    unique: dict[tuple[str, str, int, str], str] = {}
    for url in urls:
        unique.setdefault(_same_server_key(url), url)  # the first spelling is kept
    if len(unique) > 1 and getattr(args, "comfy_output_dir", None):
        raise InvalidInputError(
            "--comfy-output-dir names one server's output folder; a farm reads every server's frames through /view"
        )
    return list(unique.values()) or [DEFAULT_SERVER]


def run_farm_command(
    args: argparse.Namespace, request: RunRequest, urls: list[str], monitor: Monitor
) -> tuple[int, RunResult | None]:
    """Prepare against every server, dispatch, report; the exit codes of ``run``."""
    from ..farm.redact import redact_url
    from ..farm.run import FarmSettings, open_state, prepare_farm, run_farm
    from ..runner.prepare import PrepareFailure
    from . import cmd_run
    from ._monitor_options import RunEvents

    def warn(text: str) -> None:
        cmd_run._say(args, {"event": "warning", "message": text}, f"warning: {text}")

    farm = prepare_farm(request, urls, warn=warn)
    if isinstance(farm, PrepareFailure):
        for url in urls:
            monitor.server_up(redact_url(url), farm.exit_code != cmd_run.EXIT_SERVER_UNREACHABLE)
        return cmd_run._fail(args, farm), None
    for server in farm.servers:
        monitor.server_up(server.label, True)
    prepared = farm.prepared
    cmd_run._announce(args, prepared)
    names = ", ".join(f"{s.label} ({s.instance_id})" for s in farm.servers)
    cmd_run._say(args, {"event": "farm_start", "servers": [s.label for s in farm.servers]}, f"servers: {names}")
    progress = cmd_run.Progress(args.json, prepared.workflow)
    events = RunEvents(progress, monitor, farm.servers[0].label, prepared.options.run_id)
    try:
        state = open_state(farm)
    except InvalidInputError as exc:
        return cmd_run._fail(args, PrepareFailure("resume", str(exc), cmd_run.EXIT_USAGE)), None
    events.documents = lambda scene_id: state.scenes.get(scene_id, {}).get("Document")
    settings = FarmSettings(args.per_server, args.quarantine_after, args.probe_interval_seconds)
    result = run_farm(farm, state, settings, notify=events)
    failed = not all(s.ok for s in result.scenes)
    code = cmd_run.EXIT_OK if result.ok else (cmd_run.EXIT_SCENES_FAILED if failed else cmd_run.EXIT_RUN_INVALID)
    if not args.json:
        for stats in result.servers:
            emit(stats.line())
    page = cmd_run._write_report(args, result.run_dir, prepared.options.comfy_output_dir) if args.report else None
    extra: dict[str, Any] = {"servers": [s.as_dict() for s in result.servers]}
    cmd_run._report(args, result, code, page, extra)
    return code, result
