"""The only place node code touches ComfyUI, always lazily and with fallbacks.

Every function works without ComfyUI installed (unit tests, the demo command):
it then returns an explicit fallback. Tests replace these functions with fakes.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from typing import Any

from ..telemetry import DeviceHint, hint_from_torch_device

logger = logging.getLogger(__name__)

FALLBACK_OUTPUT_ENV = "SCENE_TELEMETRY_OUTPUT_DIR"


def output_directory() -> str:
    """ComfyUI's output directory, or $SCENE_TELEMETRY_OUTPUT_DIR / a temp folder outside ComfyUI."""
    try:
        import folder_paths
    except ImportError:
        fallback = os.environ.get(FALLBACK_OUTPUT_ENV) or os.path.join(tempfile.gettempdir(), "scene-telemetry")
        return os.path.abspath(fallback)
    return str(folder_paths.get_output_directory())


def executing_context() -> tuple[str | None, str | None]:
    """(prompt_id, node_id) of the running node, or (None, None) outside ComfyUI."""
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:
        return None, None
    context = get_executing_context()
    if context is None:
        return None, None
    return str(context.prompt_id), str(context.node_id)


def comfyui_version() -> str | None:
    """ComfyUI's version string, or None outside ComfyUI."""
    try:
        import comfyui_version
    except ImportError:
        return None
    version = getattr(comfyui_version, "__version__", None)
    return None if version is None else str(version)


def metadata_disabled() -> bool:
    """True when the server runs with --disable-metadata (then PNGs carry no prompt)."""
    try:
        from comfy.cli_args import args
    except ImportError:
        return False
    return bool(getattr(args, "disable_metadata", False))


def current_queue_item(prompt_id: str | None) -> dict[str, Any] | None:
    """Non-secret facts about the running prompt: ``{"create_time": epoch_ms}`` or None.

    Only ``extra_data.create_time`` is read; the item's sensitive part (API keys)
    is never touched.
    """
    if prompt_id is None:
        return None
    try:
        from server import PromptServer
    except ImportError:
        return None
    queue = getattr(getattr(PromptServer, "instance", None), "prompt_queue", None)
    if queue is None:
        return None
    running, _pending = queue.get_current_queue_volatile()
    for item in running:
        if len(item) > 3 and item[1] == prompt_id and isinstance(item[3], dict):
            create_time = item[3].get("create_time")
            return {"create_time": create_time} if isinstance(create_time, (int, float)) else {}
    return None


def device_hint() -> tuple[DeviceHint | None, str | None]:
    """ComfyUI's compute device (``get_torch_device()``) as a hint, or (None, None) outside ComfyUI.

    ComfyUI imports ``comfy.model_management`` before it loads any custom node, so
    "already imported" is the test for "under ComfyUI": a dictionary lookup instead
    of a failed import (a sys.path scan) on every snapshot outside ComfyUI. The second
    value is why the lookup failed, as a fallback note.
    """
    mm = sys.modules.get("comfy.model_management")
    if mm is None:
        return None, None
    try:
        device = mm.get_torch_device()
        return hint_from_torch_device(str(device.type), device.index), None
    except Exception as exc:  # ComfyUI internals vary by version; a failed lookup must not break the probe
        return None, f"comfy: get_torch_device failed: {exc}"


def throw_if_interrupted() -> None:
    """Honour the editor's Cancel before a node starts writing (no-op outside ComfyUI)."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return
    mm.throw_exception_if_processing_interrupted()


def prompt_end_reason(prompt_id: str | None) -> str | None:
    """None while *prompt_id* runs on this server (or outside ComfyUI), else why it is no longer running.

    Called from the peak sampler's thread about twice a second, so it takes no lock the prompt worker
    holds: ``currently_running`` is copied in one C-level call (atomic under the GIL) and the history
    lookup is one ``dict.get``.
    """
    queue = prompt_queue()
    if queue is None or prompt_id is None:
        return None
    try:
        running = tuple(queue.currently_running.values())
    except (AttributeError, RuntimeError):
        return None
    if any(len(item) > 1 and item[1] == prompt_id for item in running):
        return None
    entry = getattr(queue, "history", {}).get(prompt_id)
    return f"prompt {prompt_id} {_history_outcome(entry)} before its 'after' snapshot ran"


def _history_outcome(entry: Any) -> str:
    status = entry.get("status") if isinstance(entry, dict) else None
    messages = status.get("messages") if isinstance(status, dict) else None
    events = [m[0] for m in messages if isinstance(m, (list, tuple)) and m] if isinstance(messages, list) else []
    if "execution_interrupted" in events:
        return "was interrupted"
    if "execution_error" in events:
        return "failed with an error"
    if isinstance(status, dict) and status.get("status_str") == "success":
        return "finished"
    return "ended"


def prompt_queue() -> Any:
    """``PromptServer.instance.prompt_queue`` when ComfyUI's server module is loaded, else None."""
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    return getattr(instance, "prompt_queue", None)
