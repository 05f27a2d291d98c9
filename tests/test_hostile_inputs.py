"""Hostile workflow, scene and mapping files for ``run`` (issue 9, item 5): exit 2 and one line each.

A billion-laughs YAML (the value was expanded when an error message was built: MemoryError after 26 s),
nesting deep enough for a RecursionError, a 100,000-digit integer (ValueError), 200,000 scenes (accepted
with no limit). Each runs the real command in a child process with a memory cap and a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scene_telemetry.runner.scenes import (
    MAX_NESTING,
    MAX_SCENES,
    MAX_VALUE_BYTES,
    load_scenes,
    preview,
)
from scene_telemetry.telemetry import InvalidInputError

CHILD_TIMEOUT_S = 60.0
CHILD_MEMORY_BYTES = 3 * 1024**3
NO_SERVER = "http://127.0.0.1:9"  # never reached: every case is refused before preflight

WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}

BILLION_LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
scenes:
  - id: a
    seed: *i
"""


def _cap_memory() -> None:
    import resource  # POSIX only: the cap keeps a regression from eating the machine's memory

    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_BYTES, CHILD_MEMORY_BYTES))


def run_cli(tmp_path: Path, **files: str) -> tuple[int, str]:
    """``scene-telemetry run`` with the given file contents (workflow, scenes, mapping); (exit code, stderr)."""
    names = {"workflow": "wf.json", "scenes": "scenes.yaml", "mapping": "map.json"}
    contents = {"workflow": json.dumps(WORKFLOW), "scenes": "- id: a\n", "mapping": "{}"}
    paths = {}
    for key, default in contents.items():
        name = files.pop(f"{key}_name", names[key])
        paths[key] = tmp_path / name
        paths[key].write_text(files.pop(key, default), "utf-8")
    assert not files, files
    argv = [str(paths["workflow"]), "--scenes", str(paths["scenes"]), "--mapping", str(paths["mapping"])]
    done = subprocess.run(
        [sys.executable, "-m", "scene_telemetry.cli", "run", *argv, "--out", str(tmp_path / "run")]
        + ["--server", NO_SERVER],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        preexec_fn=_cap_memory if os.name == "posix" else None,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        check=False,
    )
    return done.returncode, done.stderr


def one_line(code: int, err: str) -> str:
    assert code == 2, err[-2000:]
    assert "Traceback" not in err and err.count("\n") == 1, err[-2000:]
    assert len(err) < 600, f"the message is not a bounded preview ({len(err)} characters)"
    return err


CASES = {
    "billion-laughs-scene-field": {"scenes": BILLION_LAUGHS},
    "billion-laughs-mapping": {
        "mapping": BILLION_LAUGHS.replace("scenes:\n  - id: a\n    seed: *i\n", "seed: *i\n"),
        "mapping_name": "map.yaml",
    },  # fmt: skip
    "deep-json-scenes": {"scenes": "[" * 100_000, "scenes_name": "scenes.json"},
    "deep-yaml-scenes": {"scenes": "[" * 100_000},
    "deep-json-workflow": {"workflow": '{"1": ' * 50_000 + "1" + "}" * 50_000},
    "deep-yaml-mapping": {
        "mapping": "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 1000)),
        "mapping_name": "map.yaml",
    },  # fmt: skip
    "100000-digit-int-json": {"scenes": '[{"id": "a", "seed": ' + "7" * 100_000 + "}]", "scenes_name": "s.json"},
    "100000-digit-int-yaml": {"scenes": "- id: a\n  seed: " + "7" * 100_000 + "\n"},
    "huge-hex-int-yaml": {"scenes": "- id: a\n  seed: 0x" + "f" * 100_000 + "\n"},
    "200000-scenes": {"scenes": json.dumps([{"id": f"s{i}"} for i in range(200_000)]), "scenes_name": "s.json"},
    "1-MB-scene-id": {"scenes": json.dumps([{"id": "x" * 1_000_000}]), "scenes_name": "s.json"},
    "1-MB-field-value": {"scenes": json.dumps([{"id": "a", "prompt": "y" * 1_000_000}]), "scenes_name": "s.json"},
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_a_hostile_input_file_is_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    err = one_line(*run_cli(tmp_path, **CASES[case]))
    assert str(tmp_path) in err, err


def test_the_limits_are_named_in_the_messages(tmp_path: Path) -> None:
    assert f"limit {MAX_SCENES}" in one_line(*run_cli(tmp_path, **CASES["200000-scenes"]))
    assert f"{MAX_NESTING} levels" in one_line(*run_cli(tmp_path, **CASES["deep-json-scenes"]))
    assert "aliases" in one_line(*run_cli(tmp_path, **CASES["billion-laughs-scene-field"]))
    assert f"limit {MAX_VALUE_BYTES // 1024} KiB" in one_line(*run_cli(tmp_path, **CASES["1-MB-field-value"]))
    assert "more than 4300 digits" in one_line(*run_cli(tmp_path, **CASES["100000-digit-int-json"]))


def test_scenes_at_the_limits_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps([{"id": f"s{i}", "prompt": "p" * 1000} for i in range(MAX_SCENES)]), "utf-8")
    assert len(load_scenes(path)) == MAX_SCENES
    path.write_text(json.dumps([{"id": "a", "prompt": "p" * (MAX_VALUE_BYTES - 100)}]), "utf-8")
    assert len(load_scenes(path)) == 1


def test_a_bad_value_is_shown_as_a_bounded_preview() -> None:
    laughs: list[object] = ["lol"] * 9
    for _ in range(9):
        laughs = [laughs] * 9
    shown = preview(laughs)
    assert len(shown) <= 80 and shown.startswith("[[[")
    assert len(preview("z" * 1_000_000)) <= 80
    assert "bits" in preview(int("f" * 20_000, 16))  # repr() of it raises ValueError


def test_a_scene_list_problem_names_the_value_boundedly(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps([{"id": "../" + "x" * 100_000}]), "utf-8")
    with pytest.raises(InvalidInputError) as caught:
        load_scenes(path)
    assert len(str(caught.value)) < 400
