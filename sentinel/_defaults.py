"""The sentinel's defaults, in a module of their own so the command's parser can show them cheaply."""

from __future__ import annotations

DEFAULT_QUIET_S = 5.0
"""Filesystem mode: a batch is marked after this many seconds without a change."""

STATE_NAME = ".scene-telemetry-sentinel.json"
"""The state journal's file name in the output directory (unless ``--state`` names another)."""
