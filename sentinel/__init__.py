"""The sentinel: done markers for graphs without WriteDoneMarker, as a long-running service.

Filesystem mode (:class:`FsSentinel`) watches an output directory and marks each
batch of ComfyUI-named files once it is quiet and complete; server mode
(:class:`ServerSentinel`) follows a ComfyUI server's finished prompts. Both write
the contract-v1 done marker with ``Source: "sentinel"`` and keep a state journal so
that restarts lose nothing and repeat nothing. :mod:`._install` renders systemd,
launchd, Task Scheduler and NSSM service definitions.

Kept out of the Comfy Registry archive (``.comfyignore``): file watching and
network client code.
"""

from ._formats import image_size, is_complete
from ._fs import DEFAULT_QUIET_S, FsSentinel
from ._install import (
    ServiceDefinition,
    launchd_plist,
    nssm_commands,
    systemd_unit,
    windows_task_xml,
    write_definition,
)
from ._journal import STATE_NAME, Journal
from ._marking import BatchFile, MarkerListener, MarkResult, mark_batch
from ._mounts import filesystem_type, is_network_filesystem
from ._naming import CounterName, GroupKey, parse_name
from ._outputs import FinishedPrompt, NodeBatch, from_history, from_job, node_batches
from ._server import ServerSentinel

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
