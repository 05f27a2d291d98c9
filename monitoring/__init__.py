"""Command-line monitoring: ``--metrics-port`` (Prometheus exposition) and ``--webhook`` (signed JSON events).

Public API (used by ``run``, ``sentinel`` and ``farm worker``)::

    from scene_telemetry.monitoring import Monitor

    with Monitor.from_options(args.metrics_port, args.webhook, source="run") as monitor:
        monitor.server_up(server_url, True)
        monitor.scene_ended(scene_document, run_id=run_id)      # a contract scene-telemetry document
        monitor.marker_written(marker_document, path=marker)    # counted; posted when source="sentinel"
        monitor.run_ended(run_id=run_id, exit_code=code, scenes=n, failed=k, duration_seconds=s)

Nothing here ever blocks the caller on a receiver or raises for a delivery failure.
Events and metric names are documented in the README ("Monitoring"). This package has
network-client code: it is listed in ``.comfyignore`` (not in the Comfy Registry archive).
"""

from ._events import EVENT_SCHEMA, SECRET_ENV, SIGNATURE_HEADER, redact_url, signature
from ._monitor import Monitor
from ._webhook import WebhookURLError, check_url

__all__ = [
    "EVENT_SCHEMA",
    "SECRET_ENV",
    "SIGNATURE_HEADER",
    "Monitor",
    "WebhookURLError",
    "check_url",
    "redact_url",
    "signature",
]
