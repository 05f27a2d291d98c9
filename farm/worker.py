"""``farm worker``: one Celery worker in front of one ComfyUI server (usually on the GPU host itself).

Before it takes a scene the worker checks its server (``/system_stats``, this pack's marker node) and
names it (URL, device, instance id: the worker's Celery hostname is ``<instance id>@<host>``). It then
consumes the farm queue with concurrency 1 and prefetch 1 (see :mod:`farm.celery_app`).
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

from ..comfy_api.client import ComfyClient
from ..comfy_api.preflight import EXIT_NODES_MISSING, EXIT_SERVER_UNREACHABLE, PACK_CLASSES, fetch_system_stats
from ..telemetry import ClientError
from .redact import redact_text, redact_url
from .servers import FarmServer, device_name, instance_id

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerFailure:
    reason: str
    exit_code: int


def identify_server(url: str) -> FarmServer | WorkerFailure:
    """The worker's server, named, or why it cannot serve scenes (unreachable: 10, no marker node: 11)."""
    client = ComfyClient(url)
    stats, _, last_error = fetch_system_stats(client)
    if stats is None:
        return WorkerFailure(
            f"server {redact_url(url)} did not answer /system_stats: {last_error}", EXIT_SERVER_UNREACHABLE
        )
    try:
        info = client.object_info()
    except ClientError as exc:
        return WorkerFailure(f"server {redact_url(url)}: /object_info failed: {exc}", EXIT_SERVER_UNREACHABLE)
    missing = [c for c in PACK_CLASSES if c not in info]
    if missing:
        return WorkerFailure(
            f"server {redact_url(url)} lacks {', '.join(missing)} (is the pack installed?)", EXIT_NODES_MISSING
        )
    version = (stats.get("system") or {}).get("comfyui_version")
    return FarmServer(url, instance_id(url, stats), device_name(stats), str(version) if version else None)


def broker_refusal(broker_url: str, *, timeout_s: float = 3.0) -> str | None:
    """One line when the broker answers but refuses this worker (a wrong password, a database it lacks), else
    None. Celery retries a refused login like a dead broker, for hours; an unreachable broker is left to those
    retries (a worker may start before its broker)."""
    import redis

    try:
        redis.Redis.from_url(broker_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s).ping()
    except (redis.AuthenticationError, redis.ResponseError) as exc:
        return f"broker {redact_url(broker_url)} refused this worker: {redact_text(str(exc), broker_url)}"
    except Exception:  # unreachable, a timeout, a TLS handshake: Celery's connection retries handle it
        return None
    return None


def run_worker(
    broker_url: str,
    server: FarmServer,
    *,
    out_root: str | None,
    visibility_timeout_s: float,
    server_grace_s: float = 60.0,
    loglevel: str = "WARNING",
    metrics_port: int | None = None,
    webhooks: tuple[str, ...] = (),
) -> int:
    """Consume scenes until stopped (SIGTERM: finish the scene, then stop); the worker's exit code."""
    from celery.signals import worker_process_init, worker_process_shutdown

    from .celery_app import QUEUE, make_app
    from .tasks import CONFIG_KEY, WorkerConfig, close_monitor, open_monitor

    app = make_app(broker_url, visibility_timeout_s=visibility_timeout_s)
    config = WorkerConfig(
        server,
        out_root=out_root,
        server_grace_s=server_grace_s,
        metrics_port=metrics_port,
        webhooks=webhooks,
        visibility_timeout_s=visibility_timeout_s,
    )
    app.conf[CONFIG_KEY] = config
    worker_process_init.connect(lambda **_: open_monitor(config), weak=False)
    worker_process_shutdown.connect(lambda **_: close_monitor(), weak=False)
    logger.warning(
        "farm worker for %s (%s, %s) on broker %s",
        server.label,
        server.instance_id,
        server.device or "no device",
        redact_url(broker_url),
    )
    worker = app.Worker(
        hostname=f"{server.instance_id}@{socket.gethostname()}",
        concurrency=1,
        pool="prefork",
        queues=[QUEUE],
        loglevel=loglevel,
        quiet=True,
        without_gossip=True,
        without_mingle=True,
    )
    worker.start()
    return int(worker.exitcode or 0)
