"""Reading user-supplied and on-disk files safely; validator inputs never raise: every problem is an ``error`` row.

:func:`read_bounded` is the one way this package reads a file it did not just
write: opened without blocking, checked on the opened descriptor, refused unless
a regular file (a FIFO, ``/dev/zero`` or a socket has ``st_size`` 0 and never
ends), and read with a bound. Refused as well: missing files, folders, files over
:data:`MAX_INPUT_BYTES` (not read at all), UTF-16/32 (byte-order mark, or NUL bytes without one), bytes that are not
UTF-8 (Latin-1 and other legacy encodings), malformed JSON, duplicate object keys
and the non-standard constants NaN/Infinity. A UTF-8 byte-order mark is accepted
with a warning (editors add one; our writers never do).
"""

from __future__ import annotations

import codecs
import json
import os
import stat
from pathlib import Path
from typing import Any

from ._errors import InvalidInputError
from ._report import CheckRow, row

MAX_INPUT_BYTES = 16 * 1024 * 1024
"""Refuse larger inputs unread: a 1,000-scene run's metadata is ~5 MB."""

UNREADABLE: Any = object()
"""Returned by :func:`read_json` when the file could not be used (an error row says why)."""

_WIDE_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
"""O_NONBLOCK: opening a FIFO that has no writer returns at once instead of blocking forever."""
_CHUNK_BYTES = 1024 * 1024

_KINDS: tuple[tuple[Any, str], ...] = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _limit_text(limit: int) -> str:
    return f"{limit // 1048576} MiB" if limit >= 1048576 and limit % 1048576 == 0 else f"{limit}-byte"


def _kind_of(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_bounded(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of the regular file at *path*, at most *limit* of them; anything else raises.

    The file is opened with ``O_NONBLOCK`` and checked with ``fstat`` on the opened
    descriptor (so a swap between check and read changes nothing); only a regular
    file is read (a symlink to one is fine). The read itself is bounded too: a file
    that grows past *limit* while being read is refused, never buffered whole.
    Raises :class:`InvalidInputError` with ``path`` set and a message without it.
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise InvalidInputError("file is missing", path=path) from None
    except IsADirectoryError:
        raise InvalidInputError("is a folder, not a file", path=path) from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read: {exc.strerror or exc}", path=path) from exc
    try:
        return _read_fd(fd, path, limit)
    except OSError as exc:
        raise InvalidInputError(f"cannot read: {exc.strerror or exc}", path=path) from exc
    finally:
        os.close(fd)


def _read_fd(fd: int, path: str, limit: int) -> bytes:
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        raise InvalidInputError("is a folder, not a file", path=path)
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInputError(f"is {_kind_of(info.st_mode)}, not a regular file: not read", path=path)
    if info.st_size > limit:
        raise InvalidInputError(
            f"file is {info.st_size} bytes, over the {_limit_text(limit)} limit: not read", path=path
        )
    if os.name != "nt":
        os.set_blocking(fd, True)  # a regular file: O_NONBLOCK only mattered for open()
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = os.read(fd, min(_CHUNK_BYTES, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
    raise InvalidInputError(f"file grew past the {_limit_text(limit)} limit while being read: not read", path=path)


def read_text(path: Path, rows: list[CheckRow], *, check: str = "files", scene: str | None = None) -> str | None:
    """UTF-8 text of *path*, or None after appending an error row naming the file and the reason."""

    def fail(message: str) -> None:
        rows.append(row(check, scene, path.name, "error", message, file=str(path)))

    try:
        raw = read_bounded(path, MAX_INPUT_BYTES)
    except InvalidInputError as exc:
        fail(exc.message)
        return None
    text, problem = decode_utf8(raw)
    if problem and text is None:
        fail(problem)
    elif problem:
        rows.append(row(check, scene, path.name, "warn", problem, file=str(path)))
    return text


def decode_utf8(raw: bytes) -> tuple[str | None, str | None]:
    """(text, None), (text, warning) for a UTF-8 BOM, or (None, reason) when *raw* is not UTF-8."""
    for bom, encoding in _WIDE_BOMS:
        if raw.startswith(bom):
            return None, f"file is {encoding} encoded (byte-order mark); expected UTF-8"
    warning = None
    if raw.startswith(codecs.BOM_UTF8):
        warning = "UTF-8 byte-order mark ignored (our writers never add one: the file was edited)"
        raw = raw[len(codecs.BOM_UTF8) :]
    if b"\x00" in raw:
        offset = raw.index(b"\x00")
        return None, f"NUL byte at offset {offset} (UTF-16 without a byte-order mark?); expected UTF-8"
    try:
        return raw.decode("utf-8"), warning
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        return None, f"not valid UTF-8: byte 0x{bad} at offset {exc.start} (Latin-1 or another legacy encoding?)"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def parse_json(text: str) -> Any:
    """Strict ``json.loads``: duplicate keys and NaN/Infinity refused; every failure is a ValueError.

    (Nesting deep enough to exhaust the recursion limit is one too, not a RecursionError.)
    """
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def read_json(path: Path, rows: list[CheckRow], *, check: str = "files", scene: str | None = None) -> Any:
    """Parsed JSON of *path*, or :data:`UNREADABLE` after an error row."""
    text = read_text(path, rows, check=check, scene=scene)
    if text is None:
        return UNREADABLE
    try:
        return parse_json(text)
    except json.JSONDecodeError as exc:
        message = f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
    except ValueError as exc:
        message = f"unusable JSON: {exc}"
    rows.append(row(check, scene, path.name, "error", message, file=str(path)))
    return UNREADABLE
