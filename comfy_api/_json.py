"""Parsing what a ComfyUI server sent, so that every failure is a ValueError."""

from __future__ import annotations

import json
from typing import Any


def loads_reply(data: str | bytes) -> Any:
    """``json.loads`` of what a server sent; every failure is a ValueError.

    A reply nested past the recursion limit (valid JSON from a broken or hostile server) would otherwise
    raise RecursionError, which no caller expects from a parse.
    """
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
