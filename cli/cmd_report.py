"""``scene-telemetry report RUN_DIR``: one self-contained HTML page for a run folder."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..telemetry import InvalidInputError
from ._console import emit, error

EXIT_OK = 0
EXIT_VALIDATION_FAILED = 1
EXIT_UNREADABLE = 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write an HTML report of a run folder (verdict, scenes, plots, contact sheet)",
        description=f"Writes one self-contained HTML file that opens offline. Exit {EXIT_OK} when the validator "
        f"passes, {EXIT_VALIDATION_FAILED} when it fails (the report says why), {EXIT_UNREADABLE} when nothing in "
        "the folder can be read, or the page cannot be written (-o must name an .html file).",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder, editor-run scene folder or marked folder")
    parser.add_argument("-o", "--output", metavar="FILE", help="where to write the page (default RUN_DIR/report.html)")
    parser.add_argument("--output-dir", help="ComfyUI's output directory, to find markers of a headless run")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report import REPORT_NAME, write_report  # Pillow: imported by the command, not by --help

    try:
        result = write_report(args.run_dir, args.output, output_dir=args.output_dir)
    except InvalidInputError as exc:  # NothingReadable, or -o not naming an .html file
        error(str(exc))
        return EXIT_UNREADABLE
    except OSError as exc:  # named by the page's path, not the temporary file beside it that the OS refused
        target = args.output or os.path.join(args.run_dir, REPORT_NAME)
        error(f"cannot write the report: {exc.strerror or exc} ({target})")
        return EXIT_UNREADABLE
    emit(f"report: {result.path}")
    emit(f"{len(result.view.scenes)} scene(s) · {result.validation.verdict_line()}")
    return EXIT_OK if result.ok else EXIT_VALIDATION_FAILED
