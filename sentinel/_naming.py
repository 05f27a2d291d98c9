"""ComfyUI's counter naming and the (folder, prefix) groups the sentinel marks.

SaveImage, SaveAnimatedWEBP, SaveVideo and SaveAudio name files
``<prefix>_<counter:05>_.<ext>``; VideoHelperSuite's Video Combine writes
``<prefix>_<counter:05>.<ext>`` (no trailing underscore, plus ``-audio`` for the
muxed copy). The counter is 1 + the highest existing one for the prefix, so a new
batch always has higher numbers than the batches before it, unless files were
deleted (then the modification time tells the batches apart: see the journal).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._formats import CHECKERS

_COUNTER_NAME = re.compile(r"(?P<prefix>.+)_(?P<counter>\d{5,})_?(?:-audio)?\.(?P<ext>[A-Za-z0-9]+)", re.DOTALL)
"""Matched whole (``fullmatch``) and across newlines: ``$`` would accept ``x_00001_.png\n`` as a PNG, and ``.``
without DOTALL would never group a prefix holding a newline (its files were never marked)."""


@dataclass(frozen=True, order=True)
class GroupKey:
    """Files of one batch family: the folder relative to the output dir ('/'-separated, '' = root) and prefix."""

    folder: str
    prefix: str

    @property
    def relative_prefix(self) -> str:
        """The filename_prefix as ComfyUI got it, relative to the output directory."""
        return f"{self.folder}/{self.prefix}" if self.folder else self.prefix

    @property
    def marker_name(self) -> str:
        return f"{self.prefix}.done"


@dataclass(frozen=True)
class CounterName:
    """A file name split into ComfyUI's parts."""

    prefix: str
    counter: int
    ext: str


def is_utf8_name(name: str) -> bool:
    """False for a name that is not valid UTF-8 on disk (Python holds its bytes as lone surrogates): a marker is
    UTF-8 JSON and cannot name it, so such files and folders are left alone rather than crash the writer."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_name(name: str) -> CounterName | None:
    """Split ``frame_00012_.png``; None for hidden files, markers, temp files, names without a counter and names
    that are not valid UTF-8."""
    if name.startswith(".") or not is_utf8_name(name):
        return None
    match = _COUNTER_NAME.fullmatch(name)
    if match is None:
        return None
    ext = match["ext"].lower()
    if ext not in CHECKERS:
        return None
    return CounterName(match["prefix"], int(match["counter"]), ext)
