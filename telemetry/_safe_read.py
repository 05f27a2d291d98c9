"""Reading validator inputs without ever raising: every problem becomes an ``error`` row.

Refused: missing files, folders, files over :data:`MAX_INPUT_BYTES` (not read at
all), UTF-16/32 (byte-order mark, or NUL bytes without one), bytes that are not
UTF-8 (Latin-1 and other legacy encodings), malformed JSON, duplicate object keys
and the non-standard constants NaN/Infinity. A UTF-8 byte-order mark is accepted
with a warning (editors add one; our writers never do).
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any

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


def read_text(path: Path, rows: list[CheckRow], *, check: str = "files", scene: str | None = None) -> str | None:
    """UTF-8 text of *path*, or None after appending an error row naming the file and the reason."""

    def fail(message: str) -> None:
        rows.append(row(check, scene, path.name, "error", message, file=str(path)))

    try:
        if path.is_dir():
            fail("is a folder, not a file")
            return None
        size = path.stat().st_size
        if size > MAX_INPUT_BYTES:
            fail(f"file is {size} bytes, over the {MAX_INPUT_BYTES // 1048576} MiB limit: not read")
            return None
        raw = path.read_bytes()
    except FileNotFoundError:
        fail("file is missing")
        return None
    except OSError as exc:
        fail(f"cannot read: {exc.strerror or exc}")
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
