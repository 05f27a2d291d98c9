"""Timestamps and version strings shared by every writer."""

from __future__ import annotations

import functools
import sys
from datetime import datetime, timezone
from typing import Any

PACKAGE_VERSION = "0.1.0"
"""Kept equal to pyproject's [project].version by tests/test_packaging.py."""


def utc_now() -> datetime:
    """Current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def iso_utc(moment: datetime) -> str:
    """Format a datetime as UTC ISO-8601 with a 'Z' suffix and millisecond precision."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_from_epoch_ms(epoch_ms: float) -> str:
    """Format epoch milliseconds (ComfyUI's timestamps) as UTC ISO-8601."""
    return iso_utc(datetime.fromtimestamp(epoch_ms / 1000.0, tz=timezone.utc))


def parse_iso(text: str) -> datetime:
    """Parse a timestamp written by :func:`iso_utc` (or any ISO-8601 with offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@functools.cache
def torch_version() -> str | None:
    """Installed torch version without importing torch (side-effect free; looked up once: ~3 ms a call).

    ``importlib.metadata`` is imported here, not at module top: it costs ~10 ms of start-up.
    """
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def versions(comfyui_version: str | None) -> dict[str, Any]:
    """The contract's ``Versions`` object."""
    import platform  # here, not at module top: every command imports this module, few write documents

    return {
        "Package": PACKAGE_VERSION,
        "ComfyUI": comfyui_version,
        "Python": platform.python_version(),
        "Torch": torch_version() if "torch" not in sys.modules else _loaded_torch_version(),
    }


def _loaded_torch_version() -> str | None:
    version = getattr(sys.modules["torch"], "__version__", None)
    return str(version) if version is not None else None
