"""``scene-telemetry demo``: the pack's nodes on synthetic frames, no ComfyUI, no GPU."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ._console import emit


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the nodes in-process on synthetic frames and leave a complete scene folder",
    )
    parser.add_argument("--out", default="demo-output", help="output directory (default ./demo-output)")
    parser.add_argument("--frames", type=int, default=16, help="number of synthetic frames (default 16)")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--scene-id", default="demo-scene")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report import write_report  # numpy, Pillow and the nodes: imported by the command, not by --help
    from ..runner.demo import run_demo

    result = run_demo(Path(os.path.abspath(args.out)), args.frames, args.width, args.height, args.scene_id)
    emit(f"scene folder: {result.folder}")
    for path in result.files:
        emit(f"  {path.name}")
    page = write_report(result.folder)
    emit(f"report: {page.path} (open it in a browser)")
    return 0
