"""Is a media file closed? Cheap structural checks that read a few bytes, never the whole file.

ComfyUI's savers write straight to the final name (SaveImage, SaveAnimatedWEBP,
SaveVideo and Video Combine are not atomic), so a file that exists may still be
growing. Besides a size that stopped changing, each format has a tell-tale end:

- PNG ends with the ``IEND`` chunk (12 fixed bytes);
- WEBP is a RIFF container whose header states the file size;
- GIF ends with the ``0x3B`` trailer;
- MP4/MOV (ISO BMFF) is a chain of boxes that must parse exactly to the end of
  the file and hold a ``moov`` box (a streaming writer leaves the tail short);
- JPEG ends with the ``FFD9`` end-of-image marker.

Other extensions (webm, audio) rely on size stability alone.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable
from typing import BinaryIO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_MAX_BOXES = 100_000
"""An MP4 with more top-level boxes than this is not one we vouch for (fragmented files have a few thousand)."""

Checker = Callable[[BinaryIO, int], bool]


def _png_complete(f: BinaryIO, size: int) -> bool:
    if size < len(PNG_SIGNATURE) + len(PNG_IEND) or f.read(8) != PNG_SIGNATURE:
        return False
    f.seek(size - len(PNG_IEND))
    return f.read(len(PNG_IEND)) == PNG_IEND


def _webp_complete(f: BinaryIO, size: int) -> bool:
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return False
    riff_size = int.from_bytes(head[4:8], "little")
    return riff_size + 8 == size  # RIFF size excludes the 8-byte "RIFF"+size header


def _gif_complete(f: BinaryIO, size: int) -> bool:
    if size < 14 or f.read(6) not in (b"GIF87a", b"GIF89a"):
        return False
    f.seek(size - 1)
    return f.read(1) == b"\x3b"


def _jpeg_complete(f: BinaryIO, size: int) -> bool:
    if size < 4 or f.read(2) != b"\xff\xd8":
        return False
    f.seek(size - 2)
    return f.read(2) == b"\xff\xd9"


def _isobmff_complete(f: BinaryIO, size: int) -> bool:
    """Top-level boxes chain exactly to EOF (no size-0 'to the end' box) and one of them is ``moov``."""
    offset, seen_moov = 0, False
    for _ in range(_MAX_BOXES):
        if offset == size:
            return seen_moov
        if size - offset < 8:
            return False
        f.seek(offset)
        header = f.read(16)
        if len(header) < 8:
            return False
        box_size, box_type = struct.unpack(">I4s", header[:8])
        if box_size == 1:  # 64-bit largesize follows the type
            if len(header) < 16:
                return False
            (box_size,) = struct.unpack(">Q", header[8:16])
            if box_size < 16:
                return False
        elif box_size < 8:  # 0 = "extends to EOF": a writer still streaming (or a file we cannot vouch for)
            return False
        seen_moov = seen_moov or box_type == b"moov"
        offset += box_size
        if offset > size:
            return False
    return False


CHECKERS: dict[str, Checker | None] = {
    "png": _png_complete,
    "webp": _webp_complete,
    "gif": _gif_complete,
    "jpg": _jpeg_complete,
    "jpeg": _jpeg_complete,
    "mp4": _isobmff_complete,
    "m4v": _isobmff_complete,
    "mov": _isobmff_complete,
    "webm": None,
    "mkv": None,
    "avi": None,
    "flac": None,
    "wav": None,
    "mp3": None,
    "opus": None,
}
"""Extensions the sentinel groups (lower case), with their completeness check (None: size stability only)."""


def _open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open *path* for reading without ever blocking: a FIFO (or a device, a socket) named like a frame raises.

    ``open()`` of a FIFO with no writer blocks forever, which would stop the sentinel; O_NONBLOCK
    returns at once and the type is checked on the opened descriptor (no check-then-open race).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{os.fspath(path)} is not a regular file")
        if os.name != "nt":
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def is_complete(path: str | os.PathLike[str], size: int | None = None) -> bool:
    """True when *path* looks closed for its format (unknown formats: True; unreadable or not a regular file:
    False)."""
    ext = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    checker = CHECKERS.get(ext)
    try:
        with _open_regular(path) as f:
            actual = os.fstat(f.fileno()).st_size
            if size is not None and actual != size:
                return False
            if actual == 0:
                return False
            return True if checker is None else checker(f, actual)
    except OSError:
        return False


def image_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(width, height) from a PNG, GIF or extended WEBP header; None for other files."""
    try:
        with _open_regular(path) as f:
            head = f.read(32)
    except OSError:
        return None
    if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR" and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
    elif head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        width, height = struct.unpack("<HH", head[6:10])
    elif head[:4] == b"RIFF" and head[8:16] == b"WEBPVP8X" and len(head) >= 30:
        width = 1 + int.from_bytes(head[24:27], "little")
        height = 1 + int.from_bytes(head[27:30], "little")
    else:
        return None
    return (width, height) if width > 0 and height > 0 else None
