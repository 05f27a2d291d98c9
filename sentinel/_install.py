"""Service definitions that keep the sentinel running: systemd, launchd, Task Scheduler, NSSM.

Each renderer takes the exact command line (a list of arguments, the first the
Python interpreter) and returns the file's text plus where it goes and the one
command that enables it. Nothing here runs that command: enabling a service is
the user's decision.
"""

from __future__ import annotations

import plistlib
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from ..telemetry import atomic_write_bytes

SERVICE_NAME = "scene-telemetry-sentinel"
LAUNCHD_LABEL = "io.github.scene-telemetry.sentinel"
TASK_NAME = "scene-telemetry sentinel"
RESTART_DELAY_S = 5


@dataclass(frozen=True)
class ServiceDefinition:
    """A rendered service file: its text, where it goes by default, how to enable it."""

    kind: str
    text: str
    path: Path
    enable_command: str
    encoding: str = "utf-8"


def _systemd_quote(arg: str) -> str:
    """One ExecStart word: double-quoted, with systemd's escapes for ``\\``, ``"``, ``%`` and ``$``."""
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def systemd_unit(
    command: Sequence[str], *, user: bool, home: Path | None = None, path: Path | None = None
) -> ServiceDefinition:
    """A ``Type=simple`` unit that restarts on failure (a clean exit, e.g. after SIGTERM, stays stopped)."""
    exec_start = " ".join(_systemd_quote(a) for a in command)
    wanted_by = "default.target" if user else "multi-user.target"
    text = f"""[Unit]
Description=scene-telemetry sentinel: done markers for ComfyUI outputs
Documentation=https://github.com/scene-telemetry/scene-telemetry#sentinel
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={exec_start}
Restart=on-failure
RestartSec={RESTART_DELAY_S}
KillSignal=SIGTERM
TimeoutStopSec=10

[Install]
WantedBy={wanted_by}
"""
    base = (home or Path.home()) / ".config" / "systemd" / "user" if user else Path("/etc/systemd/system")
    default = base / f"{SERVICE_NAME}.service"
    ctl = "systemctl --user" if user else "sudo systemctl"
    # A unit outside the search path is linked in by naming its absolute path.
    unit = f"{SERVICE_NAME}.service" if path is None or path == default else shlex.quote(str(path))
    enable = f"{ctl} daemon-reload && {ctl} enable --now {unit}"
    return ServiceDefinition("systemd", text, path or default, enable)


def launchd_plist(command: Sequence[str], *, home: Path | None = None, path: Path | None = None) -> ServiceDefinition:
    """A LaunchAgent that starts at login and is restarted when it exits with a failure."""
    base = home or Path.home()
    log = base / "Library" / "Logs" / f"{SERVICE_NAME}.log"
    body = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(command),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": RESTART_DELAY_S,
        "StandardOutPath": str(log),
        "StandardErrorPath": str(log),
        "ProcessType": "Background",
    }
    text = plistlib.dumps(body, fmt=plistlib.FMT_XML, sort_keys=False).decode("utf-8")
    path = path or base / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    enable = f'launchctl bootstrap gui/"$(id -u)" {shlex.quote(str(path))}'
    return ServiceDefinition("launchd", text, path, enable)


def windows_task_xml(command: Sequence[str], *, path: Path | None = None) -> ServiceDefinition:
    """A Task Scheduler task (``schtasks /Create /XML``): at logon, restarted on failure, no time limit."""
    program, arguments = command[0], subprocess.list2cmdline(list(command[1:]))
    text = f"""<?xml version="1.0" encoding="UTF-16"?>
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Description>scene-telemetry sentinel: done markers for ComfyUI outputs</Description>
    <URI>\\{escape(TASK_NAME)}</URI>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger>
      <Enabled>true</Enabled>
    </LogonTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author">
      <LogonType>InteractiveToken</LogonType>
      <RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <AllowHardTerminate>true</AllowHardTerminate>
    <StartWhenAvailable>true</StartWhenAvailable>
    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>
    <IdleSettings>
      <StopOnIdleEnd>false</StopOnIdleEnd>
      <RestartOnIdle>false</RestartOnIdle>
    </IdleSettings>
    <AllowStartOnDemand>true</AllowStartOnDemand>
    <Enabled>true</Enabled>
    <Hidden>false</Hidden>
    <RunOnlyIfIdle>false</RunOnlyIfIdle>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <Priority>7</Priority>
    <RestartOnFailure>
      <Interval>PT1M</Interval>
      <Count>999</Count>
    </RestartOnFailure>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>{escape(program)}</Command>
      <Arguments>{escape(arguments)}</Arguments>
    </Exec>
  </Actions>
</Task>
"""
    path = path or Path.cwd() / f"{SERVICE_NAME}.xml"
    enable = f'schtasks /Create /TN "{TASK_NAME}" /XML "{path}"'
    return ServiceDefinition("windows-task", text, path, enable, encoding="utf-16")


CMD_SPECIAL = frozenset("&|<>^()")
"""Characters cmd.exe acts on outside double quotes (``^`` makes the next one literal)."""


def cmd_escape(line: str) -> str:
    r"""*line* as a ``.cmd`` script must hold it so that cmd.exe runs exactly *line*.

    ``%`` is doubled (a batch file expands ``%NAME%`` even inside quotes: ``100%`` would vanish), and
    ``& | < > ^ ( )`` outside double quotes get a ``^``. cmd toggles its quote state on every ``"``,
    escaped or not, so the inner ``\"`` of a quoted argument with a space leaves that argument's text
    unquoted for cmd: ``C:\R&D out`` there would have run ``D`` as a command.
    """
    out: list[str] = []
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif char == "%":
            out.append("%")
        elif char in CMD_SPECIAL and not quoted:
            out.append("^")
        out.append(char)
    return "".join(out)


def nssm_commands(command: Sequence[str], *, path: Path | None = None) -> ServiceDefinition:
    """A ``.cmd`` script of NSSM commands: install the service, restart on any exit, log to files, start it."""
    path = path or Path.cwd() / f"{SERVICE_NAME}-nssm.cmd"
    base = path.parent
    program, arguments = command[0], subprocess.list2cmdline(list(command[1:]))
    log = base / f"{SERVICE_NAME}.log"

    def q(value: str) -> str:
        return subprocess.list2cmdline([value])

    lines = [
        "@echo off",
        "rem scene-telemetry sentinel as a Windows service (NSSM: https://nssm.cc). Run from an elevated prompt.",
        f"nssm install {SERVICE_NAME} {q(program)}",
        f"nssm set {SERVICE_NAME} AppParameters {q(arguments)}",
        f"nssm set {SERVICE_NAME} DisplayName {q(TASK_NAME)}",
        f"nssm set {SERVICE_NAME} Description {q('Done markers for ComfyUI outputs')}",
        f"nssm set {SERVICE_NAME} Start SERVICE_AUTO_START",
        f"nssm set {SERVICE_NAME} AppExit Default Restart",
        f"nssm set {SERVICE_NAME} AppRestartDelay {RESTART_DELAY_S * 1000}",
        f"nssm set {SERVICE_NAME} AppStopMethodConsole 3000",
        f"nssm set {SERVICE_NAME} AppStdout {q(str(log))}",
        f"nssm set {SERVICE_NAME} AppStderr {q(str(log))}",
        f"nssm start {SERVICE_NAME}",
    ]
    text = "\r\n".join(lines[:2] + [cmd_escape(line) for line in lines[2:]]) + "\r\n"
    return ServiceDefinition("nssm", text, path, f'cmd /c "{path}"')


def write_definition(definition: ServiceDefinition) -> Path:
    """Atomically write *definition* to its path, creating the folder (UTF-16 with BOM for Task Scheduler)."""
    definition.path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(definition.path, definition.text.encode(definition.encoding))
