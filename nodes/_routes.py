"""``GET /scene-telemetry/metrics`` on ComfyUI's own port: Prometheus text exposition of this pack.

Registered when the pack loads (``nodes/__init__.py``) on ``PromptServer.instance.routes``,
which ComfyUI 0.8.0 creates before it loads custom nodes and mounts after (with an
``/api/scene-telemetry/metrics`` twin). Outside ComfyUI (pip, tests, the CLI) the
``server`` module is not loaded and nothing happens: no import, no thread, no route.

This module stays in the Comfy Registry archive, so it holds no network-*client* and no
subprocess code. It serves a route, so it needs aiohttp's ``web`` (the server side, which
ComfyUI has already imported). tests/test_packaging.py's tripwire flags a bare import of the
aiohttp package (whose client is ``ClientSession``), not this module's lazy ``from aiohttp
import web`` in the handler, which only builds a response. The work is done in the handler, on
ComfyUI's event loop, and is short: counting the queue and history takes no lock the
prompt worker holds, and ``prometheus_client`` is imported on the first scrape only.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from ..telemetry import METRICS_CONTENT_TYPE, device_memory_now, render_metrics
from . import _comfy

logger = logging.getLogger(__name__)

ROUTE = "/scene-telemetry/metrics"


def register_routes() -> bool:
    """Add the metrics route to ComfyUI's route table; False (and no side effect) outside ComfyUI."""
    if "server" not in sys.modules:  # ComfyUI imports server before any pack; a lookup, not an import attempt
        return False
    try:
        from server import PromptServer
    except ImportError:
        return False
    routes = getattr(getattr(PromptServer, "instance", None), "routes", None)
    if routes is None:
        return False
    routes.get(ROUTE)(metrics_handler)
    logger.debug("scene-telemetry metrics at %s", ROUTE)
    return True


def _devices() -> list[dict[str, Any]]:
    return device_memory_now(*_comfy.device_hint())


async def metrics_handler(request: Any) -> Any:
    """One scrape: the exposition text, or 500 with one line if building it failed."""
    from aiohttp import web  # the server side only; see the module docstring

    try:
        body = render_metrics(_comfy.prompt_queue, _devices)
    except Exception as exc:  # a scrape must never take the server down; say why in one line
        logger.warning("scene-telemetry metrics failed: %s", exc, exc_info=True)
        return web.Response(status=500, text=f"scene-telemetry metrics failed: {exc}\n")
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})
