"""Where frames go: ComfyUI's ``filename_prefix`` rules, made safe.

Mirrors ``folder_paths.get_save_image_path`` of ComfyUI 0.8.0 (server-side
``%width%``/``%height%``/date tokens, subfolder = dirname of the prefix, counter =
1 + the highest existing ``<name>_NNNNN_`` number of any extension) and adds what
it lacks: ``realpath`` containment (a symlink inside the output directory that
points outside is refused), NUL bytes and absurd lengths are refused, and nothing
is created before every check passed.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ._errors import InvalidInputError, UnsafePathError

MAX_PREFIX_CHARS = 512
MAX_COMPONENT_CHARS = 200
_COUNTER_RE_TEMPLATE = r"^{name}_(\d+)_"


@dataclass(frozen=True)
class SavePlan:
    """Where a batch of frames will be written."""

    output_dir: Path
    folder: Path
    filename: str
    counter: int
    subfolder: str
    prefix: str

    @property
    def marker_path(self) -> Path:
        """Deterministic marker path: ``<folder>/<filename>.done``."""
        return self.folder / marker_name(self.filename)

    def owns(self, name: str) -> bool:
        """True for this prefix's marker and frame names (``<filename>_<n>_.<ext>``): a dead writer's temps of
        these are swept at once (two live writers of one prefix in one folder would share counters anyway)."""
        return (
            name == self.marker_path.name
            or re.match(_COUNTER_RE_TEMPLATE.format(name=re.escape(self.filename)), name) is not None
        )

    def frame_name(self, index: int, extension: str = "png") -> str:
        """SaveImage's naming: ``<filename>_<counter:05>_.png`` (``%batch_num%`` expanded)."""
        base = self.filename.replace("%batch_num%", str(index))
        return f"{base}_{self.counter + index:05}_.{extension}"


def marker_name(filename: str) -> str:
    """Marker file name for a prefix basename (``frame`` → ``frame.done``)."""
    return f"{filename.replace('%batch_num%', '')}.done"


def expand_tokens(prefix: str, width: int = 0, height: int = 0, now: time.struct_time | None = None) -> str:
    """Expand the server-side ``%…%`` tokens ComfyUI expands (local time, like ComfyUI)."""
    if "%" not in prefix:
        return prefix
    t = now or time.localtime()
    values = {
        "%width%": str(width),
        "%height%": str(height),
        "%year%": str(t.tm_year),
        "%month%": f"{t.tm_mon:02}",
        "%day%": f"{t.tm_mday:02}",
        "%hour%": f"{t.tm_hour:02}",
        "%minute%": f"{t.tm_min:02}",
        "%second%": f"{t.tm_sec:02}",
    }
    for token, value in values.items():
        prefix = prefix.replace(token, value)
    return prefix


def check_prefix_text(prefix: str) -> None:
    """Refuse prefixes no file system should see."""
    if not prefix or not prefix.strip():
        raise InvalidInputError("filename_prefix is empty", field="filename_prefix")
    if "\x00" in prefix:
        raise InvalidInputError("filename_prefix contains a NUL byte", field="filename_prefix")
    if len(prefix) > MAX_PREFIX_CHARS:
        raise InvalidInputError(
            f"filename_prefix is {len(prefix)} characters long (limit {MAX_PREFIX_CHARS})",
            field="filename_prefix",
        )
    for part in re.split(r"[\\/]", prefix):
        if len(part) > MAX_COMPONENT_CHARS:
            raise InvalidInputError(
                f"a filename_prefix component is {len(part)} characters long (limit {MAX_COMPONENT_CHARS})",
                field="filename_prefix",
            )


def ensure_inside(output_dir: Path, candidate: Path, *, what: str) -> Path:
    """Return realpath(candidate) if it lies inside realpath(output_dir), else raise."""
    root = Path(os.path.realpath(output_dir))
    resolved = Path(os.path.realpath(candidate))
    try:
        common = os.path.commonpath([root, resolved])
    except ValueError:  # Windows: another drive ("Paths don't have the same drive") is outside too
        common = None
    if common != str(root):
        raise UnsafePathError(
            f"{what} escapes the output directory: saving outside the output folder is not allowed",
            path=str(candidate),
        )
    return resolved


def plan_save(output_dir: str | os.PathLike[str], prefix: str, width: int = 0, height: int = 0) -> SavePlan:
    """Resolve *prefix* under *output_dir* like ComfyUI, refusing any escape.

    The folder is created only after every check passed.
    """
    check_prefix_text(prefix)
    out = Path(os.path.abspath(output_dir))
    expanded = expand_tokens(prefix, width, height)
    if os.path.isabs(expanded) or expanded.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", expanded):
        raise UnsafePathError("filename_prefix is an absolute path", path=expanded)
    normalised = os.path.normpath(expanded)
    subfolder = os.path.dirname(normalised)
    filename = os.path.basename(normalised)
    if not filename or filename in (".", ".."):
        raise InvalidInputError(f"filename_prefix {prefix!r} has no file name part", field="filename_prefix")
    folder = Path(os.path.abspath(out / subfolder))
    if os.path.commonpath([out, folder]) != str(out):
        raise UnsafePathError("filename_prefix escapes the output directory", path=expanded)
    _check_existing_ancestors(out, folder)
    folder.mkdir(parents=True, exist_ok=True)
    ensure_inside(out, folder, what="filename_prefix")
    return SavePlan(
        output_dir=out,
        folder=folder,
        filename=filename,
        counter=next_counter(folder, filename),
        subfolder=Path(subfolder).as_posix() if subfolder else "",
        prefix=expanded,
    )


def _check_existing_ancestors(out: Path, folder: Path) -> None:
    """Refuse a folder whose deepest existing ancestor resolves outside *out* (symlink escape)."""
    probe = folder
    while not probe.exists() and probe != out and probe.parent != probe:
        probe = probe.parent
    ensure_inside(out, probe, what="filename_prefix")


def next_counter(folder: Path, filename: str) -> int:
    """ComfyUI's counter: 1 + highest ``<filename>_<n>_`` among files of any extension."""
    pattern = re.compile(_COUNTER_RE_TEMPLATE.format(name=re.escape(os.path.normcase(filename))))
    highest = 0
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 1
    for name in names:
        match = pattern.match(os.path.normcase(name))
        if match:
            highest = max(highest, int(match.group(1)))
    return highest + 1


def relative_posix(base: Path, target: Path) -> str:
    """'/'-separated path of *target* relative to *base* (both resolved)."""
    return Path(os.path.relpath(target, base)).as_posix()
