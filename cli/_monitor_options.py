"""``--metrics-port`` and ``--webhook`` for every long-running command (run, sentinel, farm worker).

Usage in a command::

    add_monitoring_arguments(parser)
    ...
    monitor = open_monitor(args, source="sentinel")
    if isinstance(monitor, str):
        error(monitor)
        return 2
    try:
        ...  # monitor.scene_ended(...), monitor.marker_written(...), monitor.run_ended(...)
    finally:
        monitor.close()
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the monitoring package (HTTP server, webhook threads) loads only when a command opens it
    from ..monitoring import Monitor

logger = logging.getLogger(__name__)


def metrics_port(text: str) -> int:
    """argparse ``type=`` for ``--metrics-port``: 1-65535."""
    try:
        port = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not in 1-65535")
    return port


def webhook_url(text: str) -> str:
    """argparse ``type=`` for ``--webhook``: an http(s) URL; the error never repeats the URL's secrets."""
    from ..monitoring import WebhookURLError, check_url

    try:
        return check_url(text)
    except WebhookURLError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_monitoring_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("monitoring")
    group.add_argument(
        "--metrics-port",
        type=metrics_port,
        metavar="PORT",
        help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics while the command runs",
    )
    group.add_argument(
        "--webhook",
        type=webhook_url,
        action="append",
        default=[],
        metavar="URL",
        help="POST a JSON event to URL when a scene or the run ends (sentinel: per marker written; "
        "repeatable); signed with "
        "$SCENE_TELEMETRY_WEBHOOK_SECRET when set; never delays the command",
    )


def open_monitor(args: argparse.Namespace, *, source: str) -> Monitor | str:
    """The command's :class:`Monitor`, or one line saying why it could not start (the port is taken)."""
    from ..monitoring import Monitor, WebhookURLError

    port = getattr(args, "metrics_port", None)
    try:
        return Monitor.from_options(port, getattr(args, "webhook", None) or [], source=source)
    except WebhookURLError as exc:
        return str(exc)
    except OSError as exc:
        return f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}"


class RunEvents:
    """The runner's ``on_event``: each event goes to the terminal printer, and each scene end to the monitor.

    ``documents`` maps a scene id to its contract document once the runner recorded it (set after the
    runner exists); without one the monitor gets the event's own fields.
    """

    def __init__(
        self, progress: Callable[[dict[str, Any]], None], monitor: Monitor, server: str, run_id: str | None
    ) -> None:
        self._progress = progress
        self._monitor = monitor
        self._server = server
        self._run_id = run_id
        self.documents: Callable[[str], dict[str, Any] | None] = lambda _scene_id: None

    def __call__(self, event: dict[str, Any]) -> None:
        self._progress(event)
        if event.get("event") != "scene_end":
            return
        try:
            self._scene_end(event)
        except Exception:  # monitoring must never end a run
            logger.warning("monitoring failed for scene %s", event.get("scene"), exc_info=True)

    def _scene_end(self, event: dict[str, Any]) -> None:
        scene_id = str(event.get("scene"))
        document = self.documents(scene_id) or {
            "SceneId": scene_id,
            "PromptId": event.get("prompt_id"),
            "HistoryExitReason": event.get("exit_reason"),
            "ExitDetail": event.get("detail"),
            "ForcedCopyTriggered": event.get("forced_copy"),
        }
        self._monitor.scene_ended(document, run_id=self._run_id)
        if document.get("ForcedCopyTriggered"):
            self._monitor.marker_written({"Source": "runner-forced"}, post=False)
        elif document.get("DoneMarkerDetected"):
            self._monitor.marker_written({"Source": "node"}, post=False)
        server = str(event.get("server") or self._server)  # a farm's events name their server
        self._monitor.server_up(server, event.get("exit_reason") != "serverLost")
