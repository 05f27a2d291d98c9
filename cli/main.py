"""``scene-telemetry`` command line: dispatches to ``cli/cmd_*.py`` subcommands.

Each ``cmd_<name>.py`` module defines ``register(subparsers)``, which adds its
parser and sets ``func`` (``argparse.Namespace -> int`` exit code). Modules are
discovered, so adding a command touches no other file. A command line that names
a command imports only that command's module (``scene-telemetry validate`` never
imports the runner or the sentinel); ``--help`` imports them all. This package is kept out
of the Comfy Registry archive (``.comfyignore``): it holds the network client
and subprocess code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Sequence

from ..telemetry import PACKAGE_VERSION, TelemetryError
from ._console import error

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE: what a shell reports for a writer whose reader (``| head -1``) went away."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every discovered subcommand, or with just the one in module ``cmd_<only>``."""
    parser = argparse.ArgumentParser(
        prog="scene-telemetry",
        description="Completion markers and telemetry for ComfyUI video pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {PACKAGE_VERSION}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    package = importlib.import_module(__package__ or "scene_telemetry.cli")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_") and only in (None, info.name[4:]):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            module.register(subparsers)
    if only is not None and only not in subparsers.choices:  # the module registers another name: list them all
        return build_parser()
    return parser


def named_command(argv: Sequence[str]) -> str | None:
    """The command an argument list names (its first argument that is not an option), if a module provides it."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    if first is None or not first.isidentifier():
        return None
    package = importlib.import_module(__package__ or "scene_telemetry.cli")
    return first if any(info.name == f"cmd_{first}" for info in pkgutil.iter_modules(package.__path__)) else None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scene-telemetry`` console script."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=named_command(arguments))
    args = parser.parse_args(arguments)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # watchdog logs a harmless ERROR when an observer is stopped while its emitter still reads (a race inside
    # watchdog: "queue_events() called when the thread is inactive"); a dead emitter that matters is detected and
    # reported by our own code, which falls back to polling. Keep a command's stderr to its one line.
    logging.getLogger("watchdog").setLevel(logging.DEBUG if args.verbose else logging.CRITICAL)
    try:
        code: int = args.func(args)
    except BrokenPipeError:
        return _reader_gone()
    except TelemetryError as exc:
        error(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    return code


def _reader_gone() -> int:
    """stdout's reader exited (``scene-telemetry demo | head -1``): stop quietly, like a Unix filter.

    Python ignores SIGPIPE, so the write raised BrokenPipeError; stdout now points at
    the null device so that the interpreter's final flush cannot raise again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout has no file descriptor (embedded, redirected to an object)
        pass
    return EXIT_BROKEN_PIPE
