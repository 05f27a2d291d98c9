"""The editor extension under web/: import rules (always) and its Node test suite (when node is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
WEB_DIR = REPO_ROOT / "web"
JS_TESTS = sorted((REPO_ROOT / "tests" / "web").glob("*.test.mjs"))
# The whole Node suite takes well under a second; the margin covers a busy 2-core machine.
NODE_TEST_TIMEOUT_S = 60
# Served at /extensions/<folder>/<path>: the front end's modules are at /scripts/.
ALLOWED_FRONTEND_MODULES = {"/scripts/app.js", "/scripts/api.js"}
IMPORT_RE = re.compile(r"""^\s*import\s[^"']*["']([^"']+)["']""", re.MULTILINE)
REGISTER_RE = re.compile(r"""registerExtension\(\s*\{\s*name:\s*["']([^"']+)["']""")


def served_path(js_file: Path, specifier: str) -> str:
    """Where the browser resolves *specifier* for a file served from /extensions/<folder>/."""
    parts = ["extensions", "scene-telemetry", *js_file.relative_to(WEB_DIR).parent.parts]
    for piece in specifier.split("/"):
        if piece == "..":
            parts.pop()
        elif piece != ".":
            parts.append(piece)
    return "/" + "/".join(parts)


def web_js_files() -> list[Path]:
    return sorted(WEB_DIR.rglob("*.js"))


def test_web_directory_is_exported() -> None:
    import scene_telemetry

    assert (REPO_ROOT / scene_telemetry.WEB_DIRECTORY).resolve() == WEB_DIR
    assert web_js_files(), "no extension modules under web/"


@pytest.mark.parametrize("js_file", web_js_files(), ids=lambda p: str(p.relative_to(WEB_DIR)))
def test_imports_only_app_api_or_own_modules(js_file: Path) -> None:
    for specifier in IMPORT_RE.findall(js_file.read_text(encoding="utf-8")):
        assert specifier.startswith("."), f"{specifier}: bare imports do not resolve in the browser"
        target = served_path(js_file, specifier)
        own = target.startswith("/extensions/scene-telemetry/")
        assert own or target in ALLOWED_FRONTEND_MODULES, f"{js_file.name} imports {target}"
        if own:
            assert (WEB_DIR / target.removeprefix("/extensions/scene-telemetry/")).is_file(), target


def test_extension_names_are_namespaced_and_unique() -> None:
    names = [name for f in web_js_files() for name in REGISTER_RE.findall(f.read_text(encoding="utf-8"))]
    assert names, "no app.registerExtension call found"
    assert all(name.startswith("scene-telemetry.") for name in names), names
    assert len(names) == len(set(names)), names


def test_served_path_resolution() -> None:
    js = WEB_DIR / "js" / "x.js"
    assert served_path(js, "../../../scripts/app.js") == "/scripts/app.js"
    assert served_path(js, "../../scripts/app.js") == "/extensions/scripts/app.js"
    assert served_path(js, "./lib/node_text.js") == "/extensions/scene-telemetry/js/lib/node_text.js"


def test_js_suite_passes_under_node() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: the web/ extension's JavaScript tests (tests/web/) cannot run")
    assert JS_TESTS, "no tests/web/*.test.mjs found"
    result = subprocess.run(
        [node, "--test", *map(str, JS_TESTS)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=NODE_TEST_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"^# fail 0$", result.stdout, re.MULTILINE), result.stdout[-2000:]
    assert not re.search(r"^# pass 0$", result.stdout, re.MULTILINE), "the Node runner ran no tests"
