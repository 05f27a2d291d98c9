"""``scene-telemetry --help``, ``validate`` and ``wait`` start without numpy, Pillow, torch or the node code.

Each command runs through the real entry point (``cli.main.main``) in a fresh
interpreter, which then lists the heavy modules it holds. ``scene_telemetry.nodes``
itself and its ``_names`` (the node ids the runner checks workflows against) are
light; every other module of the node package is node code. The import *time* is
measured by benchmarks/startup.py, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from run_factory import make_run

HEAVY = ("numpy", "PIL", "torch")
LIGHT_NODE_MODULES = ("scene_telemetry.nodes", "scene_telemetry.nodes._names")

PROBE = """
import json, sys
from scene_telemetry.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = [m for m in {heavy!r} if m in sys.modules]
node_code = [m for m in sys.modules if m.startswith("scene_telemetry.nodes") and m not in {light!r}]
print(json.dumps({{"code": code, "loaded": sorted(heavy + node_code)}}))
"""


def run_cli(*argv: str) -> tuple[int, list[str]]:
    """Exit code of ``scene-telemetry ARGV`` and the heavy modules it loaded."""
    probe = PROBE.format(heavy=HEAVY, light=LIGHT_NODE_MODULES)
    done = subprocess.run(
        [sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["code"], result["loaded"]


def test_help_lists_every_command_without_heavy_imports() -> None:
    code, loaded = run_cli("--help")
    assert code == 0
    assert loaded == []


@pytest.mark.parametrize("command", ["validate", "wait", "run", "gpu", "report", "demo", "sentinel"])
def test_a_commands_help_needs_no_heavy_imports(command: str) -> None:
    code, loaded = run_cli(command, "--help")
    assert code == 0
    assert loaded == []


def test_validate_a_run_without_heavy_imports(output_dir: Path) -> None:
    run = make_run(output_dir)
    code, loaded = run_cli("validate", str(run.run_dir))
    assert code == 0
    assert loaded == []


def test_wait_for_a_marker_without_heavy_imports(output_dir: Path) -> None:
    run = make_run(output_dir)
    code, loaded = run_cli("wait", run.marker["marker_path"], "--timeout", "5")
    assert code == 0
    assert loaded == []


def test_wait_timeout_without_heavy_imports(tmp_path: Path) -> None:
    code, loaded = run_cli("wait", str(tmp_path), "--timeout", "0.2", "--poll-interval", "0.05")
    assert code == 3
    assert loaded == []


def test_the_node_code_loads_on_first_read_of_the_mappings() -> None:
    """What ComfyUI's loader does right after importing the folder: read the mappings."""
    probe = (
        "import sys, scene_telemetry as pack\n"
        "before = 'scene_telemetry.nodes.write_done_marker' in sys.modules\n"
        "names = sorted(pack.NODE_CLASS_MAPPINGS)\n"
        "print(before, 'scene_telemetry.nodes.write_done_marker' in sys.modules, hasattr(pack, 'comfy_entrypoint'),"
        " len(names), sorted(pack.NODE_DISPLAY_NAME_MAPPINGS) == names)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["False", "True", "False", "4", "True"]


def test_a_named_command_imports_only_its_own_module(output_dir: Path) -> None:
    run = make_run(output_dir)
    probe = (
        "import sys\n"
        "from scene_telemetry.cli.main import main\n"
        "code = main(sys.argv[1:])\n"
        "print(code, sorted(m for m in sys.modules if m.startswith(('scene_telemetry.cli.cmd_',"
        " 'scene_telemetry.runner', 'scene_telemetry.sentinel', 'scene_telemetry.comfy_api'))))\n"
    )
    command = [sys.executable, "-c", probe, "validate", str(run.run_dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.splitlines()[-1] == "0 ['scene_telemetry.cli.cmd_validate']"


def test_an_unknown_command_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from scene_telemetry.cli.main import main, named_command

    assert named_command(["-v", "wait", "x"]) == "wait"
    assert named_command(["bogus"]) is None and named_command(["--help"]) is None
    with pytest.raises(SystemExit):
        main(["bogus"])
    err = capsys.readouterr().err
    assert "choose from" in err and "'validate'" in err and "'sentinel'" in err


def test_help_loads_no_engine_of_the_service_commands() -> None:
    """``--help`` registers every parser; file watching, the webhook senders and the HTTP client stay unloaded."""
    probe = (
        "import json, sys\nfrom scene_telemetry.cli.main import build_parser\nbuild_parser()\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('watchdog', 'scene_telemetry.sentinel._',"
        " 'scene_telemetry.monitoring', 'celery')) and m != 'scene_telemetry.sentinel._defaults')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout) == []


def test_the_sentinel_package_resolves_every_public_name_lazily() -> None:
    from scene_telemetry import sentinel

    for name in sentinel.__all__:
        assert getattr(sentinel, name) is not None, name
    with pytest.raises(AttributeError):
        _ = sentinel.NoSuchName  # type: ignore[attr-defined]
