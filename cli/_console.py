"""The command-line tool's single output channel (library code only logs)."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO


def emit(text: str, *, stream: TextIO | None = None) -> None:
    """Write one line of user-facing output (stdout unless *stream* is given)."""
    out = stream or sys.stdout
    try:
        out.write(text + "\n")
    except UnicodeEncodeError:  # a file name that is not UTF-8, on a console whose errors handler is strict
        encoding = out.encoding or "utf-8"
        out.write((text + "\n").encode(encoding, "backslashreplace").decode(encoding))
    out.flush()


def emit_json(payload: Any, *, stream: TextIO | None = None) -> None:
    """Write one JSON document on one line (machine-readable output)."""
    emit(json.dumps(payload, ensure_ascii=False, sort_keys=True), stream=stream)


def error(text: str) -> None:
    """Write an error line to stderr."""
    emit(f"scene-telemetry: error: {text}", stream=sys.stderr)
