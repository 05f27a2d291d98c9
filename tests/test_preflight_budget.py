"""Preflight has its own stated budget (issue 9, item 7).

A server that accepts TCP and never answers held preflight for 3 x 30 s before exit 10, outside any
printed budget. Now every preflight request shares one deadline (default 15 s, ``--preflight-budget-seconds``),
which the ``run_start`` line states beside the scene worst case.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_comfy import FakeComfy, Scenario
from scene_telemetry.cli.main import main
from scene_telemetry.comfy_api.client import ComfyClient
from scene_telemetry.comfy_api.preflight import DEFAULT_PREFLIGHT_BUDGET_S, EXIT_SERVER_UNREACHABLE, run_preflight


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that completes the TCP handshake (the kernel's backlog) and never answers a byte."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_the_default_budget_is_at_most_15_s() -> None:
    assert 0 < DEFAULT_PREFLIGHT_BUDGET_S <= 15


def test_a_silent_server_fails_preflight_within_its_budget(silent_server: str) -> None:
    started = time.monotonic()
    report = run_preflight(ComfyClient(silent_server), ["EmptyImage"], server=silent_server, budget_s=1.0)
    elapsed = time.monotonic() - started
    assert report.failure is not None and report.failure.exit_code == EXIT_SERVER_UNREACHABLE
    assert "preflight budget" in report.failure.reason and "1 s" in report.failure.reason
    assert elapsed < 2.5, elapsed


def test_run_takes_the_budget_flag_and_states_it(
    tmp_path: Path, silent_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "wf.json").write_text(json.dumps({"1": {"class_type": "EmptyImage", "inputs": {}}}))
    (tmp_path / "s.yaml").write_text("- id: a\n")
    argv = ["run", str(tmp_path / "wf.json"), "--scenes", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "run")]
    started = time.monotonic()
    code = main([*argv, "--server", silent_server, "--preflight-budget-seconds", "1", "--json"])
    assert code == EXIT_SERVER_UNREACHABLE and time.monotonic() - started < 3
    assert "within the 1 s preflight budget" in capsys.readouterr().err


def test_run_start_states_the_preflight_budget_beside_the_scene_worst_case(
    tmp_path: Path, output_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workflow = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}
    (tmp_path / "wf.json").write_text(json.dumps(workflow))
    (tmp_path / "s.yaml").write_text("- id: a\n")
    argv = ["run", str(tmp_path / "wf.json"), "--scenes", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "run")]
    with FakeComfy(Scenario(), output_dir=output_dir) as fake:
        main([*argv, "--server", fake.url, "--no-gpu", "--max-wait-seconds", "5"])
    start = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("run "))
    assert f"preflight within {DEFAULT_PREFLIGHT_BUDGET_S:g} s" in start and "each scene ends within" in start
