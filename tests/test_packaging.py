"""The package loads as ComfyUI loads it, imports quietly, and publishes a clean archive."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
from pack_files import archive_files, copy_pack, tracked_files

REPO = Path(__file__).resolve().parents[1]
PY_TRIPWIRES = re.compile(
    r"\b(import\s+subprocess|from\s+subprocess|os\.system|os\.popen|import\s+socket|urllib\.request|http\.client"
    r"|import\s+requests|import\s+aiohttp|import\s+websockets|from\s+websockets|(?<![.\w])eval\(|(?<![.\w])exec\()"
    r"|rm\s+-rf"
)
# In JavaScript `regex.exec(` is harmless; eval and the Function constructor are not.
JS_TRIPWIRES = re.compile(r"(?<![.\w])eval\(|new\s+Function\(|rm\s+-rf")


def test_archive_has_no_subprocess_or_network_code() -> None:
    files = archive_files()
    assert "__init__.py" in files and any(f.startswith("telemetry/") for f in files)
    assert not any(f.startswith(("cli/", "comfy_api/", "runner/", "tests/", "benchmarks/")) for f in files)
    offenders = []
    for name in files:
        pattern = JS_TRIPWIRES if name.endswith((".js", ".mjs")) else PY_TRIPWIRES
        if name.endswith((".py", ".js", ".mjs", ".sh", "Dockerfile")):
            for number, line in enumerate((REPO / name).read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{name}:{number}: {line.strip()}")
    assert offenders == []


CLI_SIDE_IMPORT = re.compile(r"from\s+\.+(cli|comfy_api|runner)\b|import\s+\S*\b(cli|comfy_api|runner)\b")
"""The command-line packages kept out of the archive (.comfyignore)."""


def test_archive_code_never_imports_the_cli() -> None:
    for name in archive_files():
        if name.endswith(".py"):
            text = (REPO / name).read_text(encoding="utf-8")
            assert not re.search(CLI_SIDE_IMPORT, text), name


def test_pyproject_metadata() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    meta = project["project"]
    assert meta["name"] == "scene-telemetry"
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    assert meta["requires-python"] == ">=3.10"
    assert "Repository" in meta["urls"]
    assert meta["scripts"]["scene-telemetry"] == "scene_telemetry.cli.main:main"
    comfy = project["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] == "Scene Telemetry" and comfy["Icon"]
    from scene_telemetry.telemetry import PACKAGE_VERSION

    assert PACKAGE_VERSION == meta["version"]


@pytest.mark.parametrize("source", ["pyproject", "requirements"])
def test_dependencies_never_torch_or_deprecated_pynvml(source: str) -> None:
    if source == "pyproject":
        deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    else:
        deps = [d for d in (REPO / "requirements.txt").read_text().splitlines() if d and not d.startswith("#")]
    names = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() for d in deps}
    assert "nvidia-ml-py" in names and "jsonschema" in names and "watchdog" in names
    assert not names & {"torch", "torchvision", "torchaudio", "pynvml", "atomicwrites"}


_LOAD_LIKE_COMFYUI = textwrap.dedent(
    """
    import importlib.util, json, os, sys, threading
    pack = sys.argv[1]
    # ComfyUI's load_custom_node: the module name is the full path with '.' replaced.
    name = pack.replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, os.path.join(pack, "__init__.py"),
                                                  submodule_search_locations=[pack])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    print(json.dumps({
        "mappings": sorted(module.NODE_CLASS_MAPPINGS),
        "display": module.NODE_DISPLAY_NAME_MAPPINGS,
        "web": module.WEB_DIRECTORY,
        "entrypoint": hasattr(module, "comfy_entrypoint"),
        "threads": threading.active_count(),
        "heavy": sorted(m for m in ("torch", "pynvml", "comfy", "folder_paths", "server", "amdsmi")
                        if m in sys.modules),
        "cwd_files": os.listdir("."),
    }))
    """
)


@pytest.mark.parametrize("folder_name", ["scene-telemetry", "My Pack.v2 (copy)"])
def test_loads_as_comfyui_custom_node_under_any_folder_name(tmp_path: Path, folder_name: str) -> None:
    import json

    pack = copy_pack(tmp_path / "custom_nodes" / folder_name)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_LIKE_COMFYUI, str(pack)],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"},
    )
    info = json.loads(result.stdout)
    assert info["mappings"] and all(n.startswith("SceneTelemetry_") for n in info["mappings"])
    assert "SceneTelemetry_WriteDoneMarker" in info["mappings"]
    assert set(info["display"]) == set(info["mappings"])
    assert info["web"] == "./web" and (pack / "web").is_dir()
    assert info["entrypoint"] is False
    assert info["threads"] == 1, "importing the pack must start no thread"
    assert info["heavy"] == [], "importing the pack must not import torch, NVML or ComfyUI"
    assert info["cwd_files"] == [], "importing the pack must write nothing"
    assert "Traceback" not in result.stderr


def test_no_comfy_entrypoint_anywhere() -> None:
    for name in tracked_files():
        if name.endswith(".py"):
            assert not re.search(r"^\s*(async\s+)?def\s+comfy_entrypoint", (REPO / name).read_text(), re.M), name


def test_console_script_module_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scene_telemetry.cli", "--version"], capture_output=True, text=True, check=True
    )
    assert "scene-telemetry" in result.stdout


def test_telemetry_library_imports_without_comfyui_or_torch() -> None:
    code = (
        "import sys, threading; import scene_telemetry.telemetry as t; "
        "assert 'torch' not in sys.modules and 'pynvml' not in sys.modules, sorted(sys.modules); "
        "assert threading.active_count() == 1; print(t.SCHEMA_VERSION)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "scene-telemetry/1"


def test_node_modules_import_comfyui_only_lazily() -> None:
    for path in sorted((REPO / "nodes").glob("*.py")) + sorted((REPO / "telemetry").glob("*.py")):
        for line in path.read_text().splitlines():
            if not line.startswith(("import ", "from ")):
                continue  # only module-top imports (indented ones are lazy)
            assert not re.match(r"(import|from)\s+(comfy|comfy_execution|server|folder_paths|torch)\b", line), (
                f"{path.name}: {line}"
            )


def test_wheel_holds_the_library_and_the_command(tmp_path: Path) -> None:
    """``pip install .`` builds this wheel: the package, its schemas and the console script; no tests."""
    import zipfile

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("scene_telemetry-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"scene_telemetry/__init__.py", "scene_telemetry/telemetry/schemas/done-marker.json"} <= names
    assert "scene_telemetry/cli/main.py" in names and "scene_telemetry/nodes/write_done_marker.py" in names
    assert not any(n.startswith(("tests/", "scene_telemetry/tests/", "benchmarks/")) for n in names)
    assert "scene-telemetry = scene_telemetry.cli.main:main" in entry_points
    code = "import scene_telemetry.telemetry as t; print(t.__file__); print(len(t.load_schema('common')['$defs']))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
    )
    installed_file, defs = result.stdout.split()
    assert installed_file.startswith(str(tmp_path / "site")) and int(defs) > 0


def test_nothing_reads_outside_the_repository() -> None:
    """A plain clone has no folder beside it: code, tests and benchmarks use only what is tracked here."""
    outside = re.compile(r"\.\./shared|parents\[\d\]\s*/\s*[\"']shared|\.parent\s*/\s*[\"']shared[\"/]")
    offenders = [
        f"{name}:{number}"
        for name in tracked_files()
        if name.endswith((".py", ".sh", ".toml", ".ini", ".cfg")) or name.startswith(".ci/")
        for number, line in enumerate((REPO / name).read_text(encoding="utf-8").splitlines(), 1)
        if outside.search(line) and "outside = re.compile" not in line
    ]
    assert offenders == []


def test_build_backend_supports_the_license_expression() -> None:
    """``license = "MIT"`` (a PEP 639 expression) needs setuptools 77; an older declared floor fails to build."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert isinstance(project["project"]["license"], str)
    (requirement,) = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    match = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", requirement)
    assert match is not None and int(match.group(1)) >= 77
