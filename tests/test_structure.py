"""The layout rules of issue 8, kept true: small modules, and telemetry's private modules stay private.

- No tracked Python module outside ``tests/`` is longer than :data:`MAX_MODULE_LINES` lines.
- No package but ``telemetry`` itself imports a ``telemetry._x`` module: every other package (the pip
  mapping's packages: ``nodes``, ``cli``, ``comfy_api``, ``runner``, ``report`` …) uses only what
  ``telemetry/__init__.py`` exports. ``benchmarks/`` scripts are not packages and may time private parts.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import tomllib
from pack_files import tracked_files

REPO = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 450


def _package_dirs() -> list[str]:
    """Repository folders of the pip packages other than telemetry (``scene_telemetry.cli`` → ``cli``)."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = []
    for package in setuptools["packages"]:
        parts = package.split(".")[1:]
        if parts and parts[0] != "telemetry":
            folders.append("/".join(parts))
    return folders


def _package_modules() -> list[str]:
    folders = tuple(f"{folder}/" for folder in _package_dirs())
    return [
        name
        for name in tracked_files()
        if name.endswith(".py") and (name == "__init__.py" or (name.startswith(folders) and name.count("/") == 1))
    ]


def private_telemetry_imports(source: str) -> list[str]:
    """Every import of a ``telemetry._x`` module in *source* (relative or absolute), as written."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = [alias.name for alias in node.names]
            if re.search(r"(^|\.)telemetry\._", module):
                found.append(f"from {'.' * node.level}{module} import {', '.join(names)}")
            elif re.search(r"(^|\.)telemetry$", module) and any(n.startswith("_") for n in names):
                found.append(f"from {'.' * node.level}{module} import {', '.join(names)}")
        elif isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if re.search(r"(^|\.)telemetry\._", a.name)]
    return found


def test_no_module_is_longer_than_the_limit() -> None:
    sizes = {
        name: len((REPO / name).read_text(encoding="utf-8").splitlines())
        for name in tracked_files()
        if name.endswith(".py") and not name.startswith("tests/")
    }
    assert len(sizes) > 20  # the walk found the package
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_packages_use_only_telemetrys_public_api() -> None:
    modules = _package_modules()
    assert "nodes/gpu_snapshot.py" in modules and "runner/runner.py" in modules and "cli/main.py" in modules
    offenders = {
        name: found
        for name in modules
        if (found := private_telemetry_imports((REPO / name).read_text(encoding="utf-8")))
    }
    assert offenders == {}


def test_the_import_check_recognises_every_spelling() -> None:
    bad = [
        "from ..telemetry._gpu import take_snapshot",
        "from ..telemetry import _gpu",
        "from scene_telemetry.telemetry._errors import InvalidInputError",
        "import scene_telemetry.telemetry._validate",
    ]
    for line in bad:
        assert private_telemetry_imports(line) == [line], line
    good = "from ..telemetry import InvalidInputError, take_snapshot\nfrom .._telemetry_helpers import x\n"
    assert private_telemetry_imports(good) == []
