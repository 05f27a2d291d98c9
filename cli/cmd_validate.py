"""``scene-telemetry validate RUN_DIR``: check a run folder's summary, metadata, telemetry and markers."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ._console import emit, emit_json, error

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_UNREADABLE = 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check run-summary.txt against artifact-metadata.json, the telemetry files and the markers",
        description=f"Exit {EXIT_OK} when every check passes, {EXIT_MISMATCH} on any failed check, "
        f"{EXIT_UNREADABLE} when an input cannot be read (missing, too big, not UTF-8, malformed JSON) or "
        "--output-dir is not a folder.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="folder holding artifact-metadata.json and run-summary.txt")
    parser.add_argument("--output-dir", help="ComfyUI's output directory, to find markers of a headless run")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON document")
    parser.add_argument("--problems", action="store_true", help="list only failures and warnings")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..telemetry import validate_run  # the validator's modules load when it runs, not for --help

    if args.output_dir is not None and not os.path.isdir(args.output_dir):
        error(f"--output-dir {args.output_dir}: not a folder (it should be ComfyUI's output directory)")
        return EXIT_UNREADABLE
    report = validate_run(args.run_dir, output_dir=args.output_dir)
    if args.json:
        emit_json(report.to_dict(problems_only=args.problems))
    else:
        emit(report.render_text(problems_only=args.problems))
    if report.unreadable:
        return EXIT_UNREADABLE
    return EXIT_OK if report.ok else EXIT_MISMATCH
