"""``scene-telemetry demo``: the pack's nodes on synthetic frames, no ComfyUI, no GPU."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._console import emit, error

EXIT_USAGE = 2
MAX_FRAMES = 10_000
MAX_SIDE_PX = 16_384
"""WriteDoneMarker's own limit on a frame side."""
MAX_BATCH_BYTES = 2 * 1024**3
"""The synthetic batch is float32 RGB in memory: 2 GiB is 16 4K frames or 2,000 at 512x512."""
_SCENE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the nodes in-process on synthetic frames and leave a complete scene folder",
    )
    parser.add_argument("--out", default="demo-output", help="output directory (default ./demo-output)")
    parser.add_argument(
        "--frames", type=_whole(1, MAX_FRAMES), default=16, help=f"synthetic frames, 1..{MAX_FRAMES} (default 16)"
    )
    parser.add_argument("--width", type=_whole(1, MAX_SIDE_PX), default=256, help=f"1..{MAX_SIDE_PX} px")
    parser.add_argument("--height", type=_whole(1, MAX_SIDE_PX), default=144, help=f"1..{MAX_SIDE_PX} px")
    parser.add_argument("--scene-id", type=_scene_id, default="demo-scene", help="names the scene and its folder")
    parser.set_defaults(func=run, demo_parser=parser)


def _whole(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value

    return parse


def _scene_id(text: str) -> str:
    if not _SCENE_ID_RE.match(text) or ".." in text:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not 1-120 letters, digits, '.', '_' or '-'")
    return text


def run(args: argparse.Namespace) -> int:
    batch_bytes = args.frames * args.width * args.height * 3 * 4  # float32 RGB, allocated before the first node
    if batch_bytes > MAX_BATCH_BYTES:
        args.demo_parser.error(
            f"--frames x --width x --height is {batch_bytes / 1024**3:.1f} GiB of float32 frames "
            f"(limit {MAX_BATCH_BYTES // 1024**3} GiB)"
        )
    from ..report import write_report  # numpy, Pillow and the nodes: imported by the command, not by --help
    from ..runner.demo import run_demo
    from ..runner.prepare import out_problem

    problem = out_problem(Path(args.out))
    if problem is not None:
        error(problem)
        return EXIT_USAGE
    result = run_demo(Path(os.path.abspath(args.out)), args.frames, args.width, args.height, args.scene_id)
    emit(f"scene folder: {result.folder}")
    for path in result.files:
        emit(f"  {path.name}")
    page = write_report(result.folder)
    emit(f"report: {page.path} (open it in a browser)")
    return 0
