"""The sentinel: done markers for graphs without WriteDoneMarker, as a long-running service.

Filesystem mode (:class:`FsSentinel`) watches an output directory and marks each
batch of ComfyUI-named files once it is quiet and complete; server mode
(:class:`ServerSentinel`) follows a ComfyUI server's finished prompts. Both write
the contract-v1 done marker with ``Source: "sentinel"`` and keep a state journal so
that restarts lose nothing and repeat nothing. :mod:`._install` renders systemd,
launchd, Task Scheduler and NSSM service definitions.

Kept out of the Comfy Registry archive (``.comfyignore``): file watching and
network client code.

Importing the package is cheap (``scene-telemetry --help`` registers the sentinel's parser
without loading file watching or the HTTP client): the two defaults the parser shows are
plain constants, and every other public name is imported from its module on first use
(PEP 562 ``__getattr__``), as in ``telemetry``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._defaults import DEFAULT_QUIET_S, STATE_NAME

if TYPE_CHECKING:
    from ._formats import image_size, is_complete
    from ._fs import FsSentinel
    from ._install import (
        ServiceDefinition,
        launchd_plist,
        nssm_commands,
        systemd_unit,
        windows_task_xml,
        write_definition,
    )
    from ._journal import Journal
    from ._marking import BatchFile, MarkerListener, MarkResult, mark_batch
    from ._mounts import filesystem_type, is_network_filesystem
    from ._naming import CounterName, GroupKey, parse_name
    from ._outputs import FinishedPrompt, NodeBatch, from_history, from_job, node_batches
    from ._server import ServerSentinel

_MODULES: dict[str, tuple[str, ...]] = {
    "._formats": (
        "image_size",
        "is_complete",
    ),
    "._fs": ("FsSentinel",),
    "._install": (
        "ServiceDefinition",
        "launchd_plist",
        "nssm_commands",
        "systemd_unit",
        "windows_task_xml",
        "write_definition",
    ),
    "._journal": ("Journal",),
    "._marking": (
        "BatchFile",
        "MarkResult",
        "MarkerListener",
        "mark_batch",
    ),
    "._mounts": (
        "filesystem_type",
        "is_network_filesystem",
    ),
    "._naming": (
        "CounterName",
        "GroupKey",
        "parse_name",
    ),
    "._outputs": (
        "FinishedPrompt",
        "NodeBatch",
        "from_history",
        "from_job",
        "node_batches",
    ),
    "._server": ("ServerSentinel",),
}
_OWNER: dict[str, str] = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use, and keep it."""
    module = _OWNER.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "DEFAULT_QUIET_S",
    "STATE_NAME",
    "BatchFile",
    "CounterName",
    "FinishedPrompt",
    "FsSentinel",
    "GroupKey",
    "Journal",
    "MarkResult",
    "MarkerListener",
    "NodeBatch",
    "ServerSentinel",
    "ServiceDefinition",
    "filesystem_type",
    "from_history",
    "from_job",
    "image_size",
    "is_complete",
    "is_network_filesystem",
    "launchd_plist",
    "mark_batch",
    "node_batches",
    "nssm_commands",
    "parse_name",
    "systemd_unit",
    "windows_task_xml",
    "write_definition",
]
