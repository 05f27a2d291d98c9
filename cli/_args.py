"""Checks shared by the subcommands' arguments: a bad value is one line and exit 2, never a traceback."""

from __future__ import annotations

import argparse

from ..comfy_api.server_url import parse_server_url
from ..telemetry import InvalidInputError


def server_url(text: str) -> str:
    """argparse ``type=`` for ``--server``."""
    try:
        return parse_server_url(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
