"""``scene-telemetry`` command line: dispatches to ``cli/cmd_*.py`` subcommands.

Each ``cmd_<name>.py`` module defines ``register(subparsers)``, which adds its
parser and sets ``func`` (``argparse.Namespace -> int`` exit code). Modules are
discovered, so adding a command touches no other file. This package is kept out
of the Comfy Registry archive (``.comfyignore``): it holds the network client
and subprocess code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
from collections.abc import Sequence

from ..telemetry import PACKAGE_VERSION, TelemetryError
from ._console import error

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="scene-telemetry",
        description="Completion markers and telemetry for ComfyUI video pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {PACKAGE_VERSION}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    package = importlib.import_module(__package__ or "scene_telemetry.cli")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scene-telemetry`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except TelemetryError as exc:
        error(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    return code
