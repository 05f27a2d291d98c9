"""The Celery app of the farm: a Redis broker, one queue, settings for scenes that must not be lost.

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only when its scene
  ended, and a worker process killed mid-scene puts it back on the queue at once;
- ``worker_prefetch_multiplier=1`` and concurrency 1: a worker holds exactly the scene it runs, so a
  free GPU takes the next one (pull-based, as the in-process dispatcher);
- the broker's ``visibility_timeout`` above a scene's worst case: when a whole worker machine dies, Redis
  gives its unacknowledged scene to another worker after this long (plus at most a quarter of it, or 10 s:
  the sweep interval), and never while a scene may still run.

Celery (the ``[farm]`` extra) is imported only here and in the modules that need the app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery

from ..runner.options import RunOptions, scene_worst_case_s
from ..runner.policy import QueuePolicy

QUEUE = "scene-telemetry"
TASK_NAME = "scene_telemetry.farm.run_scene"
VISIBILITY_MARGIN = 1.5
"""The visibility timeout is this many times the scene worst case (slow shared storage, clock skew)."""
MIN_VISIBILITY_TIMEOUT_S = 10.0
RESTORE_SWEEP_FRACTION = 0.25


def visibility_timeout_for(policy: QueuePolicy, *, gpu_snapshots: bool = True) -> float:
    """The broker visibility timeout for scenes under *policy* (remote markers, the worst case of docs/runner.md)."""
    options = RunOptions(
        server="", run_dir=Path("."), policy=policy, run_id="", gpu_snapshots=gpu_snapshots, resume=True
    )
    return max(MIN_VISIBILITY_TIMEOUT_S, round(VISIBILITY_MARGIN * scene_worst_case_s(options), 1))


def make_app(broker_url: str, *, visibility_timeout_s: float) -> Celery:
    """The farm's app for *broker_url* (``redis://[:password@]host:port/db``)."""
    app = Celery("scene_telemetry_farm", broker=broker_url, set_as_current=False)
    transport: dict[str, Any] = {
        "visibility_timeout": visibility_timeout_s,
        # kombu sweeps for expired unacknowledged messages every interval x throttle seconds (default 10 x 10):
        # sweep every RESTORE_SWEEP_FRACTION of the timeout (at most 10 s), so a lost scene comes back soon after it
        "unacked_restore_interval": max(1, min(10, int(visibility_timeout_s * RESTORE_SWEEP_FRACTION))),
        "unacked_restore_throttle": 1,
    }
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2.0,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_ignore_result=True,
        worker_disable_rate_limits=True,
        worker_enable_remote_control=True,
    )
    from .tasks import register

    register(app)
    return app
