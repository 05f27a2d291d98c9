"""The command line on bad input: one clear line and the documented exit code, never a hang or a traceback."""

from __future__ import annotations

import pytest
from scene_telemetry.cli.main import build_parser


@pytest.mark.parametrize(
    "argv",
    [
        ["--timeout", "nan"],
        ["--timeout", "inf"],
        ["--timeout", "-1"],
        ["--timeout", "soon"],
        ["--poll-interval", "0"],
        ["--poll-interval", "-0.5"],
        ["--poll-interval", "nan"],
    ],
    ids=["timeout-nan", "timeout-inf", "timeout-negative", "timeout-text", "poll-0", "poll-negative", "poll-nan"],
)
def test_wait_rejects_timeouts_that_never_end_or_spin(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # Parsing only: `wait --timeout nan` used to be accepted and then never returned.
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["wait", "x.done", *argv])
    assert exit_info.value.code == 2
    assert f"argument {argv[0]}" in capsys.readouterr().err


def test_wait_accepts_zero_timeout_and_a_small_interval() -> None:
    args = build_parser().parse_args(["wait", "x.done", "--timeout", "0", "--poll-interval", "0.01"])
    assert (args.timeout, args.poll_interval) == (0.0, 0.01)
