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
FILE_NAME_ROOM_BYTES = 40
"""Bytes a frame or marker name adds to the prefix's file name part, hidden temp name included:
``.<name>_00001_.png.<12 hex>.st-tmp`` is the name + 32 (+ a 6th counter digit, ``webp``, ``.done`` fit too)."""
DEFAULT_NAME_MAX, DEFAULT_PATH_MAX = 255, 4096
"""POSIX limits when ``pathconf`` cannot tell (NAME_MAX of ext4/xfs/btrfs/apfs, Linux PATH_MAX)."""
WINDOWS_NAME_MAX, WINDOWS_PATH_MAX = 255, 260
"""NTFS component length and MAX_PATH, in UTF-16 code units (32,767 when long paths are enabled)."""
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


def _existing_ancestor(folder: Path) -> Path:
    probe = folder
    while not os.path.exists(probe) and probe.parent != probe:  # os.path: False, not ENAMETOOLONG, for a long name
        probe = probe.parent
    return probe


def _windows_long_paths() -> bool:
    try:
        import ctypes

        return bool(ctypes.WinDLL("ntdll").RtlAreLongPathsEnabled())  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        return False


def name_limits(folder: Path) -> tuple[int, int]:
    """(longest file name, longest path) on the file system that holds *folder* (or its deepest existing ancestor).

    POSIX: ``pathconf`` NAME_MAX and PATH_MAX, in bytes (PATH_MAX counts the final NUL).
    Windows: 255 and 260 UTF-16 units (32,767 with long paths enabled), see :func:`encoded_length`.
    """
    if os.name == "nt":
        return WINDOWS_NAME_MAX, 32767 if _windows_long_paths() else WINDOWS_PATH_MAX
    where = _existing_ancestor(folder)
    limits = []
    for name, default in (("PC_NAME_MAX", DEFAULT_NAME_MAX), ("PC_PATH_MAX", DEFAULT_PATH_MAX)):
        try:
            value = os.pathconf(where, name)
        except (OSError, ValueError):
            value = -1
        limits.append(value if value > 0 else default)
    return limits[0], limits[1]


def encoded_length(text: str | os.PathLike[str]) -> int:
    """Length as the file system counts it: bytes in the file system encoding (UTF-16 units on Windows)."""
    value = os.fspath(text)
    if os.name == "nt":
        return len(value.encode("utf-16-le", "surrogatepass")) // 2
    return len(os.fsencode(value))


def check_name_lengths(folder: Path, components: list[str], filename: str) -> None:
    """Refuse a save whose names do not fit the file system, before anything is created.

    Every folder component must fit NAME_MAX; the file name part must fit with
    :data:`FILE_NAME_ROOM_BYTES` to spare (frame number, extension, temp suffix);
    the whole path of the longest file written must stay under PATH_MAX.
    """
    name_max, path_max = name_limits(folder)
    unit = "UTF-16 units" if os.name == "nt" else "bytes"
    for part in components:
        size = encoded_length(part)
        if size > name_max:
            raise InvalidInputError(
                f"a filename_prefix folder name is {size} {unit} ({_preview(part)}; limit {name_max} {unit} on this "
                "file system)",
                field="filename_prefix",
            )
    size = encoded_length(filename)
    if size + FILE_NAME_ROOM_BYTES > name_max:
        raise InvalidInputError(
            f"the filename_prefix file name is {size} {unit} ({_preview(filename)}; limit {name_max} {unit} on this "
            f"file system, less {FILE_NAME_ROOM_BYTES} for the frame number and the temp suffix)",
            field="filename_prefix",
        )
    whole = encoded_length(folder / filename) + FILE_NAME_ROOM_BYTES
    if whole >= path_max:
        raise InvalidInputError(
            f"the longest file of this prefix would have a {whole}-{unit[:-1] if unit == 'bytes' else unit} path "
            f"(limit {path_max} {unit} on this platform)",
            field="filename_prefix",
        )


def _preview(text: str, limit: int = 24) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def make_folders(folder: Path) -> None:
    """``mkdir -p`` that removes what it created when a level fails (a refusal leaves nothing behind)."""
    missing: list[Path] = []
    probe = folder
    while not probe.exists() and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    created: list[Path] = []
    try:
        for level in reversed(missing):
            try:
                level.mkdir()
            except FileExistsError:
                continue
            created.append(level)
    except OSError as exc:
        for level in reversed(created):
            try:
                level.rmdir()
            except OSError:
                break
        raise InvalidInputError(f"cannot create the folder: {exc.strerror or exc}", path=folder) from exc


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

    The folder is created only after every check passed, lengths in bytes against the
    file system's limits included (:func:`check_name_lengths`), and a folder level that
    still fails to be created takes the levels created before it away again.
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
    check_name_lengths(folder, [p for p in re.split(r"[\\/]", subfolder) if p], filename.replace("%batch_num%", ""))
    _check_existing_ancestors(out, folder)
    make_folders(folder)
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
