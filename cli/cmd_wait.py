"""``scene-telemetry wait``: block until a verified done marker exists."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ..telemetry import DoneTimeoutError, MarkerError, TelemetryError
from ._console import emit, emit_json, error

EXIT_USAGE = 2
EXIT_TIMEOUT = 3


def _seconds(text: str) -> float:
    """A finite number of seconds, 0 or more (``nan`` would make the deadline never pass)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds, 0 or more")
    return value


def _interval(text: str) -> float:
    """Like :func:`_seconds`, but greater than 0 (a zero interval would spin)."""
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "wait",
        help="wait for a verified .done marker (a marker path or the frame folder)",
        description="Exit 0 with the marker once it validates and every listed file has the listed size; "
        f"exit {EXIT_TIMEOUT} on timeout; exit {EXIT_USAGE} at once for a path that can never become a marker "
        "(a file not named .done, a folder named x.done, a file over 16 MiB, a folder with several markers). "
        "--json prints the marker, or {ok: false, exit_code, reason, path, problem}.",
    )
    parser.add_argument("path", help="a <name>.done file, or the folder that will hold it")
    parser.add_argument("--timeout", type=_seconds, default=600.0, help="seconds to wait (default 600)")
    parser.add_argument("--prompt-id", help="accept only a marker written by this prompt")
    parser.add_argument("--poll-interval", type=_interval, default=0.5, help="polling fallback interval (s)")
    parser.add_argument("--no-events", action="store_true", help="poll only (network shares)")
    parser.add_argument("--json", action="store_true", help="print the marker body as JSON (on failure: the result)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..telemetry import wait_for_done  # loads when the command runs, not for --help

    try:
        body = wait_for_done(
            args.path,
            args.timeout,
            prompt_id=args.prompt_id,
            poll_interval=args.poll_interval,
            use_events=not args.no_events,
        )
    except DoneTimeoutError as exc:
        return _failed(args, EXIT_TIMEOUT, "timeout", exc)
    except MarkerError as exc:  # a path that can never become a marker, a folder with several
        return _failed(args, EXIT_USAGE, "not-a-marker", exc)
    if args.json:
        emit_json(body)
    else:
        emit(_done_line(body))
    return 0


def _done_line(body: dict[str, Any]) -> str:
    """``done: 16 file(s), 1234 bytes[, prompt ID]`` (a marker written outside ComfyUI has no prompt)."""
    prompt = f", prompt {body['PromptId']}" if body.get("PromptId") is not None else ""
    return f"done: {body['FrameCount']} file(s), {body['TotalBytes']} bytes{prompt}"


def _failed(args: argparse.Namespace, code: int, reason: str, exc: TelemetryError) -> int:
    """One error line on stderr; with ``--json`` also the result on stdout (every outcome prints one JSON)."""
    error(str(exc))
    if args.json:
        problem = exc.last_problem if isinstance(exc, DoneTimeoutError) else exc.message
        emit_json({"ok": False, "exit_code": code, "reason": reason, "path": exc.path, "problem": problem})
    return code
