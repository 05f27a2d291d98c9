"""``sentinel install``: each service definition carries the exact command line and parses as its format."""

from __future__ import annotations

import plistlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from scene_telemetry.cli.cmd_sentinel import service_command
from scene_telemetry.cli.main import main
from scene_telemetry.sentinel import launchd_plist, nssm_commands, systemd_unit, windows_task_xml
from scene_telemetry.telemetry import InvalidInputError

TASK_NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}


@pytest.fixture
def command(tmp_path: Path) -> list[str]:
    out = tmp_path / "out dir %x $y"
    out.mkdir()
    return service_command(["--", "--output-dir", str(out), "--poll", "--quiet-seconds", "2.5"])


def test_service_command_is_absolute_and_normalised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    command = service_command(["--output-dir", "rel", "--state", "s.json", "--server", "http://127.0.0.1:8188/"])
    assert command[:4] == [sys.executable, "-m", "scene_telemetry.cli", "sentinel"]
    assert command[4:] == [
        "--output-dir",
        str(tmp_path / "rel"),
        "--server",
        "http://127.0.0.1:8188",
        "--state",
        str(tmp_path / "s.json"),
    ]


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ([], "--output-dir is required"),
        (["--output-dir", "x", "--once"], "--once is for cron"),
        (["--output-dir", "x", "--bogus"], "unrecognised --bogus"),
        (["--output-dir", "x", "--quiet-seconds", "-1"], "quiet-seconds"),
        (["--output-dir", "x", "--server", "file:///etc"], "http(s)"),
    ],
)
def test_service_command_refuses_what_the_sentinel_would(args: list[str], why: str) -> None:
    with pytest.raises(InvalidInputError, match=None) as exc:
        service_command(args)
    assert why in str(exc.value)


def test_systemd_unit_restarts_on_failure_with_the_exact_command(command: list[str], tmp_path: Path) -> None:
    unit = systemd_unit(command, user=True, home=tmp_path)
    assert unit.path == tmp_path / ".config/systemd/user/scene-telemetry-sentinel.service"
    lines = unit.text.splitlines()
    assert "Restart=on-failure" in lines and "WantedBy=default.target" in lines
    exec_start = next(line for line in lines if line.startswith("ExecStart="))
    assert "%%x $$y" in exec_start, "systemd specifiers and variables are escaped"
    assert unit.enable_command.startswith("systemctl --user daemon-reload && systemctl --user enable --now")
    system = systemd_unit(command, user=False)
    assert "WantedBy=multi-user.target" in system.text and system.path.parent == Path("/etc/systemd/system")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_verifies_the_unit(command: list[str], tmp_path: Path) -> None:
    unit = systemd_unit(command, user=False, path=tmp_path / "scene-telemetry-sentinel.service")
    unit.path.write_text(unit.text, "utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit.path)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "scene-telemetry-sentinel" in line and "network-online.target" not in line
    ]
    assert problems == [], result.stdout + result.stderr


def test_launchd_plist_round_trips(command: list[str], tmp_path: Path) -> None:
    plist = launchd_plist(command, home=tmp_path)
    body = plistlib.loads(plist.text.encode("utf-8"))
    assert body["ProgramArguments"] == command
    assert body["KeepAlive"] == {"SuccessfulExit": False} and body["RunAtLoad"] is True
    assert plist.path == tmp_path / "Library/LaunchAgents/io.github.scene-telemetry.sentinel.plist"
    assert plist.enable_command.startswith("launchctl bootstrap gui/")


def test_windows_task_xml_starts_at_logon_and_restarts(command: list[str], tmp_path: Path) -> None:
    task = windows_task_xml(command, path=tmp_path / "task.xml")
    data = task.text.encode(task.encoding)
    assert data[:2] in (b"\xff\xfe", b"\xfe\xff"), "schtasks reads UTF-16 with a BOM"
    root = ET.fromstring(data)
    assert root.find("t:Triggers/t:LogonTrigger/t:Enabled", TASK_NS).text == "true"
    assert root.find("t:Settings/t:RestartOnFailure/t:Count", TASK_NS) is not None
    assert root.find("t:Settings/t:ExecutionTimeLimit", TASK_NS).text == "PT0S"
    assert root.find("t:Actions/t:Exec/t:Command", TASK_NS).text == command[0]
    arguments = root.find("t:Actions/t:Exec/t:Arguments", TASK_NS).text
    assert arguments == subprocess.list2cmdline(command[1:])
    assert f'"{command[5]}"' in arguments, "the folder with spaces is quoted for CreateProcess"
    assert task.enable_command == f'schtasks /Create /TN "scene-telemetry sentinel" /XML "{task.path}"'


def test_nssm_script_installs_restarts_and_starts(command: list[str], tmp_path: Path) -> None:
    script = nssm_commands(command, path=tmp_path / "install.cmd")
    lines = script.text.split("\r\n")
    assert lines[2] == f"nssm install scene-telemetry-sentinel {subprocess.list2cmdline([command[0]])}"
    assert "nssm set scene-telemetry-sentinel AppExit Default Restart" in lines
    assert lines[-2] == "nssm start scene-telemetry-sentinel"
    assert script.enable_command == f'cmd /c "{tmp_path / "install.cmd"}"'


def test_cli_install_writes_the_file_and_prints_the_enabling_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "unit.service"
    out = tmp_path / "out"
    out.mkdir()
    code = main(["sentinel", "install", "--systemd", "--user", "--dest", str(dest), "--", "--output-dir", str(out)])
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        f"wrote {dest}",
        f"enable it with: systemctl --user daemon-reload && systemctl --user enable --now {dest}",
    ]
    assert f'"--output-dir" "{out}"' in dest.read_text("utf-8")


@pytest.mark.parametrize("kind", ["--systemd", "--launchd", "--windows-task", "--nssm"])
def test_cli_install_print_writes_nothing(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sentinel", "install", kind, "--print", "--dest", str(tmp_path / "x"), "--", "--output-dir", "o"]) == 0
    captured = capsys.readouterr()
    assert "sentinel" in captured.out and "enable it with" in captured.err
    assert not (tmp_path / "x").exists()


def test_cli_install_refuses_bad_sentinel_options_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sentinel", "install", "--nssm", "--print", "--", "--output-dir", "o", "--once"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--once" in err
    assert main(["sentinel", "install", "--launchd", "--user", "--print", "--", "--output-dir", "o"]) == 2
