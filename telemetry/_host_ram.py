"""Host RAM per operating system: Linux ``/proc/meminfo``, POSIX ``sysconf``, Windows ``GlobalMemoryStatusEx``."""

from __future__ import annotations

import logging
import os
import sys

from ._gpu_model import mib

logger = logging.getLogger(__name__)


def ram_sample() -> dict[str, int] | None:
    """Host RAM now (MiB): /proc/meminfo (MemAvailable), else sysconf, else Windows; None if unknown."""
    for reader in (_ram_from_meminfo, _ram_from_sysconf, _ram_from_windows):
        try:
            sample = reader()
        except (OSError, ValueError, AttributeError) as exc:
            logger.debug("RAM reader %s failed: %s", reader.__name__, exc)
            continue
        if sample is not None:
            return sample
    return None


def ram_block(total_bytes: int, free_bytes: int) -> dict[str, int]:
    """The contract's ``RamSample`` from bytes (used = total − free, computed in MiB)."""
    total = mib(total_bytes) or 0
    free = min(mib(free_bytes) or 0, total)
    return {"RamTotalMB": total, "RamFreeMB": free, "RamUsedMB": total - free}


MEMINFO_PATH = "/proc/meminfo"


def _ram_from_meminfo() -> dict[str, int] | None:
    fields: dict[str, int] = {}
    with open(MEMINFO_PATH, encoding="ascii") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                fields[key] = int(parts[0]) * 1024  # meminfo's "kB" are KiB
    free = fields.get("MemAvailable", fields.get("MemFree"))
    if "MemTotal" not in fields or free is None:
        return None
    return ram_block(fields["MemTotal"], free)


def _ram_from_sysconf() -> dict[str, int] | None:
    if not hasattr(os, "sysconf"):
        return None
    page = os.sysconf("SC_PAGE_SIZE")
    return ram_block(page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES"))


def _ram_from_windows() -> dict[str, int] | None:
    if sys.platform != "win32":
        return None
    import ctypes

    class _MemoryStatusEx(ctypes.Structure):
        _fields_ = [
            ("dwLength", ctypes.c_ulong),
            ("dwMemoryLoad", ctypes.c_ulong),
            ("ullTotalPhys", ctypes.c_ulonglong),
            ("ullAvailPhys", ctypes.c_ulonglong),
            ("ullTotalPageFile", ctypes.c_ulonglong),
            ("ullAvailPageFile", ctypes.c_ulonglong),
            ("ullTotalVirtual", ctypes.c_ulonglong),
            ("ullAvailVirtual", ctypes.c_ulonglong),
            ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
        ]

    status = _MemoryStatusEx()
    status.dwLength = ctypes.sizeof(_MemoryStatusEx)
    kernel32 = getattr(ctypes, "windll").kernel32  # noqa: B009 - windll exists only on Windows
    if not kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        return None
    return ram_block(int(status.ullTotalPhys), int(status.ullAvailPhys))
