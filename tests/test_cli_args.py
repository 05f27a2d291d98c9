"""The command line on bad input: one clear line and the documented exit code, never a hang or a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from fake_comfy import FakeComfy, Scenario
from scene_telemetry.cli.main import build_parser, main
from scene_telemetry.comfy_api.gpu_remote import probe_system_stats


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


BAD_URLS = ["http://[::1", "127.0.0.1:8188", "file:///etc/passwd", "http://127.0.0.1:99999", "http://"]


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("command", [["run", "wf.json", "--scenes", "s.yaml", "--out", "o"], ["gpu"]])
def test_bad_server_url_is_a_usage_error(command: list[str], url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: a traceback (ValueError from urlsplit), exit 1, or gpu reading a local file:// "server".
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*command, "--server", url])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --server" in err and "Traceback" not in err


def test_server_url_keeps_a_good_url() -> None:
    args = build_parser().parse_args(["gpu", "--server", "http://127.0.0.1:8188/"])
    assert args.server == "http://127.0.0.1:8188"


def test_gpu_probe_refuses_non_http_urls_without_opening_them(tmp_path: Path) -> None:
    secret = tmp_path / "system_stats"
    secret.write_text('{"system": {}, "devices": []}')
    reply, notes = probe_system_stats(f"file://{tmp_path}", tries=1)
    assert reply is None and len(notes) == 1 and "http(s)" in notes[0]


def test_gpu_probe_ignores_environment_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    # As ComfyClient: a proxy in between turns "refused" into a 502 and here hid a live server.
    with FakeComfy(Scenario()) as fake:
        for name in ("http_proxy", "HTTP_PROXY"):
            monkeypatch.setenv(name, "http://127.0.0.1:9")
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        reply, notes = probe_system_stats(fake.url, tries=1)
    assert notes == [] and reply is not None and "devices" in reply


def test_dead_server_is_one_line_naming_the_url_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    (tmp_path / "scenes.yaml").write_text("- id: a\n")
    workflow = str(Path(__file__).resolve().parents[1] / "api_workflows" / "scene_telemetry_model_free.json")
    argv = ["run", workflow, "--scenes", str(tmp_path / "scenes.yaml"), "--server", url, "--out", str(tmp_path / "o")]
    assert main(argv) == 10
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].count(f"{url}/system_stats") == 1 and "connection refused" in lines[0]
