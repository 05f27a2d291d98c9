"""telemetry's public names: imported on first use, and the lazy table agrees with the type checkers' imports."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import scene_telemetry.telemetry as telemetry

INIT = Path(telemetry.__file__)


def type_checking_imports() -> dict[str, tuple[str, str]]:
    """``public name -> (module, name there)`` from the ``if TYPE_CHECKING:`` block of telemetry/__init__.py."""
    found: dict[str, tuple[str, str]] = {}
    for node in ast.parse(INIT.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.level == 1, ast.dump(statement)
                for alias in statement.names:
                    found[alias.asname or alias.name] = (str(statement.module), alias.name)
    return found


def lazy_table() -> dict[str, tuple[str, str]]:
    table = {name: (module, name) for module, names in telemetry._MODULES.items() for name in names}
    table.update(telemetry._ALIASES)
    return table


def test_the_lazy_table_is_the_type_checkers_imports_and_all() -> None:
    assert lazy_table() == type_checking_imports()
    assert sorted(lazy_table()) == sorted(telemetry.__all__)


@pytest.mark.parametrize("name", telemetry.__all__)
def test_every_public_name_is_its_modules_object(name: str) -> None:
    module, attribute = lazy_table()[name]
    owner = importlib.import_module(f"scene_telemetry.telemetry.{module}")
    assert getattr(telemetry, name) is getattr(owner, attribute)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        _ = telemetry.no_such_name
    assert not hasattr(telemetry, "comfy_entrypoint")


def test_importing_the_package_imports_no_module_of_it() -> None:
    """Only _meta (the root package's __version__) is imported until a name is used."""
    probe = (
        "import sys, scene_telemetry.telemetry as t\n"
        "print(sorted(m for m in sys.modules if m.startswith('scene_telemetry.telemetry.')))\n"
        "t.wait_for_done\n"
        "print(sorted(m for m in sys.modules if m.startswith('scene_telemetry.telemetry.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    first, second = done.stdout.splitlines()
    assert first == "['scene_telemetry.telemetry._meta']"
    assert "scene_telemetry.telemetry._wait" in second and "scene_telemetry.telemetry._collect" not in second
