"""The contact sheet: first, middle and last frame of each scene, downscaled with Pillow and embedded.

The total is capped (:data:`MAX_SHEET_SCENES` scenes, evenly spread over the run,
and :data:`MAX_SHEET_BYTES` of JPEG), so a 1,000-scene report stays small.
Thumbnails are made on a thread pool: Pillow decodes and encodes outside the GIL,
so they overlap the validator's pure-Python work.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import stat
import warnings
from collections.abc import Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from ._load import SceneRow

logger = logging.getLogger(__name__)

MAX_SHEET_SCENES = 48
"""Scenes on the sheet; a longer run shows this many, evenly spaced, and says so."""

MAX_SHEET_BYTES = 1_500_000
"""JPEG bytes on the sheet (before base64); thumbnails past it are left out, with a note."""

THUMB_BOX = (192, 108)
"""Largest thumbnail, in pixels (16:9; other aspect ratios fit inside)."""

JPEG_QUALITY = 72
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
POSITIONS: tuple[str, ...] = ("first", "middle", "last")
SHEET_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
"""The only decoders a frame is offered to, whatever its content: an EPS named ``.png`` would otherwise be
handed to Ghostscript, and Pillow's rarer plugins are more attack surface than a contact sheet needs."""


@dataclass
class Thumb:
    """One embedded frame, or why it is not shown."""

    position: str
    name: str
    data_uri: str | None = None
    width: int = 0
    height: int = 0
    note: str | None = None


@dataclass
class SheetScene:
    scene: SceneRow
    thumbs: list[Thumb]


@dataclass
class Sheet:
    """What the page shows; :attr:`total` scenes had frames, :attr:`scenes` are on the sheet."""

    scenes: list[SheetScene] = field(default_factory=list)
    total: int = 0
    jpeg_bytes: int = 0
    dropped: int = 0
    """Thumbnails left out by the byte cap."""


def pick_scenes(rows: Sequence[SceneRow], cap: int = MAX_SHEET_SCENES) -> tuple[list[SceneRow], int]:
    """At most *cap* scenes with frames, evenly spread, first and last included; and how many had frames."""
    with_frames = [r for r in rows if r.marker_path is not None and r.marker_files]
    if len(with_frames) <= cap:
        return with_frames, len(with_frames)
    if cap <= 1:
        return with_frames[:cap], len(with_frames)
    step = (len(with_frames) - 1) / (cap - 1)
    return [with_frames[round(i * step)] for i in range(cap)], len(with_frames)


def pick_frames(names: Sequence[str]) -> list[tuple[str, str]]:
    """(position, name) of the first, middle and last file, without repeats (one frame: just 'first')."""
    if not names:
        return []
    indices = [0, (len(names) - 1) // 2, len(names) - 1]
    picked: list[tuple[str, str]] = []
    seen: set[int] = set()
    for position, index in zip(POSITIONS, indices, strict=True):
        if index not in seen:
            seen.add(index)
            picked.append((position, names[index]))
    return picked


class NotAFile(OSError):
    """A frame name that is a FIFO, socket or device: opening it to read could block, or never end."""


def _open_regular(path: Path) -> BinaryIO:
    """*path* opened for reading when it is a regular file; a FIFO is opened without blocking, then refused."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotAFile("not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def thumbnail(path: Path, box: tuple[int, int] = THUMB_BOX) -> tuple[bytes, int, int]:
    """JPEG bytes of *path* fitted into *box*, and the thumbnail's size."""
    with _open_regular(path) as handle, Image.open(handle, formats=SHEET_FORMATS) as image:
        image.draft("RGB", box)  # JPEG: decode at reduced scale
        image.thumbnail(box, Image.Resampling.BILINEAR, reducing_gap=2.0)
        rgb = image.convert("RGB")
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=JPEG_QUALITY, optimize=False)
    return out.getvalue(), rgb.width, rgb.height


def _inside(folder: Path, name: str) -> Path | None:
    """``folder/name`` when it stays inside *folder* (a marker's names are relative, but check)."""
    path = folder / name
    root = os.path.realpath(folder)
    try:
        return path if os.path.commonpath([root, os.path.realpath(path)]) == root else None
    except ValueError:
        return None


def _make(path: Path | None, position: str, name: str) -> Thumb:
    if path is None:
        return Thumb(position, name, note="outside the marker's folder: not shown")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return Thumb(position, name, note="not an image (no thumbnail)")
    try:
        data, width, height = thumbnail(path)
    except NotAFile:
        return Thumb(position, name, note="not a regular file (no thumbnail)")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        return Thumb(position, name, note="too many pixels to decode for a thumbnail")
    except (OSError, ValueError, SyntaxError) as exc:
        return Thumb(position, name, note=f"unreadable: {type(exc).__name__}")
    uri = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
    return Thumb(position, name, uri, width, height)


@dataclass
class PendingSheet:
    """Thumbnails being made on an executor; :meth:`result` waits and applies the byte cap."""

    total: int
    jobs: list[tuple[SceneRow, list[Future[Thumb]]]]

    def result(self) -> Sheet:
        sheet = Sheet(total=self.total)
        for scene, futures in self.jobs:
            thumbs = []
            for future in futures:
                thumb = future.result()
                size = len(thumb.data_uri or "") * 3 // 4
                if thumb.data_uri is not None and sheet.jpeg_bytes + size > MAX_SHEET_BYTES:
                    thumb = Thumb(thumb.position, thumb.name, note="left out: the sheet's size cap was reached")
                    sheet.dropped += 1
                sheet.jpeg_bytes += size if thumb.data_uri else 0
                thumbs.append(thumb)
            sheet.scenes.append(SheetScene(scene, thumbs))
        return sheet


def refuse_bombs() -> None:
    """Make Pillow's DecompressionBombWarning an error, so such a frame gets a note instead of a thumbnail.

    Between ``Image.MAX_IMAGE_PIXELS`` and twice that, Pillow only warns (several lines on stderr) and
    decodes anyway: a small, highly compressed PNG would cost hundreds of MB per thumbnail thread.
    """
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def start_sheet(rows: Sequence[SceneRow], executor: Executor, cap: int = MAX_SHEET_SCENES) -> PendingSheet:
    """Queue the thumbnails of the picked scenes on *executor*."""
    refuse_bombs()
    picked, total = pick_scenes(rows, cap)
    jobs: list[tuple[SceneRow, list[Future[Thumb]]]] = []
    for scene in picked:
        assert scene.marker_path is not None  # pick_scenes keeps only scenes with a marker
        folder = scene.marker_path.parent
        futures = [
            executor.submit(_make, _inside(folder, name), position, name)
            for position, name in pick_frames(scene.marker_files)
        ]
        jobs.append((scene, futures))
    return PendingSheet(total, jobs)
