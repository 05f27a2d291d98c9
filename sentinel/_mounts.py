"""Is a folder on a network file system? (inotify/FSEvents do not see other hosts' writes there.)

Linux answers from ``/proc/self/mounts``: the longest mount point containing the
folder decides. Elsewhere (no mount table) the answer is "local"; ``--poll``
forces polling.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

MOUNT_TABLE = "/proc/self/mounts"
NETWORK_FS_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "afs",
        "ncpfs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "davfs",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.cephfs",
        "fuse.ceph-fuse",
        "fuse.rclone",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.davfs2",
        "fuse.juicefs",
        "fuse.mergerfs",
    }
)


def _unescape(field: str) -> str:
    """Mount table fields escape space, tab, newline and backslash as ``\\ooo`` octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mounts(text: str) -> list[tuple[str, str]]:
    """(mount point, file system type) of each line of a ``/proc/mounts`` style table."""
    mounts = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            mounts.append((_unescape(parts[1]), parts[2]))
    return mounts


def filesystem_type(folder: str | os.PathLike[str], table: str | None = None) -> str | None:
    """The type of the file system holding *folder* (None without a mount table)."""
    if table is None:
        try:
            table = Path(MOUNT_TABLE).read_text("utf-8", errors="replace")
        except OSError:
            return None
    target = os.path.realpath(folder)
    best, best_type = "", None
    for point, fstype in parse_mounts(table):
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, fstype
    return best_type


def is_network_filesystem(folder: str | os.PathLike[str], table: str | None = None) -> bool:
    """True when *folder* lies on NFS, SMB/CIFS, 9p, SSHFS or another network/cluster file system."""
    fstype = filesystem_type(folder, table)
    return fstype is not None and (fstype in NETWORK_FS_TYPES or fstype.split(".")[0] in NETWORK_FS_TYPES)
