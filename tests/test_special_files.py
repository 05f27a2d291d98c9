"""Files that are not regular files (issue 9, item 2): a FIFO, a symlink to /dev/zero or /dev/urandom.

Their ``st_size`` is 0, so a size check before an unbounded read let them through: ``validate`` never
returned on a FIFO and ate memory on /dev/zero, ``wait`` ignored its timeout. Each case runs the real
command in a child process with a memory cap and a timeout, so a regression fails instead of hanging
the suite or the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from run_factory import make_run
from scene_telemetry.telemetry import InvalidInputError, SceneContext, write_frames_with_marker
from scene_telemetry.telemetry._safe_read import read_bounded

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and /dev/zero are POSIX")

CHILD_TIMEOUT_S = 30.0
CHILD_MEMORY_BYTES = 3 * 1024**3


def _cap_memory() -> None:
    import resource  # POSIX only, like this whole module

    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_BYTES, CHILD_MEMORY_BYTES))


def cli(*args: str) -> tuple[int, str, str, float]:
    """Run ``scene-telemetry ARGS`` in a child process: (exit code, stdout, stderr, seconds)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "scene_telemetry.cli", *args],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        preexec_fn=_cap_memory,
        env=env,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def special(path: Path, kind: str) -> None:
    """Replace *path* by a FIFO or a symlink to a device."""
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(kind)


KINDS = ["fifo", "/dev/zero", "/dev/urandom"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["artifact-metadata.json", "run-summary.txt", "s01.telemetry.json"])
def test_validate_refuses_a_special_file_with_one_line_and_exit_2(output_dir: Path, name: str, kind: str) -> None:
    run = make_run(output_dir)
    special(run.run_dir / name, kind)
    code, out, err, _ = cli("validate", str(run.run_dir), "--problems")
    assert code == 2, (out, err)
    assert "Traceback" not in err
    errors = [line for line in out.splitlines() if "not a regular file" in line]
    assert len(errors) == 1 and name in errors[0], out


@pytest.mark.parametrize("kind", KINDS)
def test_validate_reports_a_special_marker_as_a_row(output_dir: Path, kind: str) -> None:
    run = make_run(output_dir)
    special(run.run_dir / "frame.done", kind)
    code, out, err, _ = cli("validate", str(run.run_dir), "--problems")
    assert code == 1 and "Traceback" not in err, (out, err)
    assert "not a regular file" in out, out


@pytest.mark.parametrize("kind", KINDS)
def test_wait_keeps_its_timeout_on_a_special_marker(output_dir: Path, kind: str) -> None:
    images = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    done = write_frames_with_marker(images, output_dir, "scene/frame", context=SceneContext(prompt_id="p1"))
    special(done.marker_path, kind)
    code, out, err, seconds = cli("wait", str(done.marker_path.parent), "--timeout", "1", "--poll-interval", "0.2")
    assert code == 3, (out, err)
    assert "Traceback" not in err and "not a regular file" in err and err.count("\n") == 1, err
    assert seconds < CHILD_TIMEOUT_S / 2


def test_a_marker_listing_a_special_file_does_not_verify(output_dir: Path) -> None:
    run = make_run(output_dir)
    frame = sorted(run.run_dir.glob("frame_*.png"))[0]
    frame.unlink()
    frame.symlink_to("/dev/zero")  # size 0: only the file type tells it apart
    marker_rows = [r for r in run_factory_report(run.run_dir) if r[0] == "marker.Files"]
    assert ("marker.Files", "fail", f"on disk: {frame.name}: not a regular file") in marker_rows


def run_factory_report(run_dir: Path) -> list[tuple[str, str, str]]:
    from scene_telemetry.telemetry import validate_run

    return [(r.field, r.verdict, r.message) for r in validate_run(run_dir).rows]


# --- the reader itself ------------------------------------------------------------------------------------------------


def test_read_bounded_reads_a_regular_file_and_a_symlink_to_one(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    target.write_bytes(b"12345")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert read_bounded(target, 5) == b"12345" == read_bounded(link, 5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: os.mkfifo(p), "is a FIFO, not a regular file: not read"),
        (lambda p: p.symlink_to("/dev/zero"), "is a character device, not a regular file: not read"),
        (lambda p: p.mkdir(), "is a folder, not a file"),
        (lambda p: None, "file is missing"),
        (lambda p: p.write_bytes(b"123456"), "file is 6 bytes, over the 5-byte limit: not read"),
    ],
)
def test_read_bounded_refuses_with_one_reason(tmp_path: Path, make: object, message: str) -> None:
    path = tmp_path / "input"
    assert callable(make)
    make(path)
    with pytest.raises(InvalidInputError) as caught:
        read_bounded(path, 5)
    assert caught.value.message == message and caught.value.path == str(path)


# --- run: the workflow, scene list, mapping and the resume state ----------------------------------------------------


def _run_inputs(tmp_path: Path) -> dict[str, Path]:
    workflow = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}
    paths = {"workflow": tmp_path / "wf.json", "scenes": tmp_path / "scenes.yaml", "mapping": tmp_path / "map.json"}
    paths["workflow"].write_text(json.dumps(workflow))
    paths["scenes"].write_text("- id: a\n")
    paths["mapping"].write_text("{}")
    return paths


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", ["workflow", "scenes", "mapping"])
def test_run_refuses_a_special_input_file_with_one_line_and_exit_2(tmp_path: Path, which: str, kind: str) -> None:
    paths = _run_inputs(tmp_path)
    special(paths[which], kind)
    argv = [str(paths["workflow"]), "--scenes", str(paths["scenes"]), "--mapping", str(paths["mapping"])]
    code, out, err, _ = cli("run", *argv, "--out", str(tmp_path / "run"), "--server", "http://127.0.0.1:9")
    assert code == 2, (out, err)
    assert "Traceback" not in err and err.count("\n") == 1 and "not a regular file" in err, err
    assert str(paths[which]) in err


def test_run_resume_refuses_a_special_state_file(tmp_path: Path, output_dir: Path) -> None:
    from fake_comfy import FakeComfy, Scenario

    paths = _run_inputs(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    special(run_dir / ".runner-state.json", "fifo")
    argv = [str(paths["workflow"]), "--scenes", str(paths["scenes"]), "--out", str(run_dir), "--resume"]
    with FakeComfy(Scenario(), output_dir=output_dir) as fake:
        code, out, err, _ = cli("run", *argv, "--server", fake.url, "--run-id", "r1", "--no-gpu")
    assert code == 2, (out, err)
    assert "Traceback" not in err and "cannot resume" in err and "not a regular file" in err, err


# --- other packages' readers: the sentinel's frame checks, the farm's --servers file ----------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_sentinel_never_blocks_on_a_special_file_named_like_a_frame(tmp_path: Path, kind: str) -> None:
    from scene_telemetry.sentinel._formats import image_size, is_complete

    path = tmp_path / "frame_00001_.png"
    special(path, kind)
    assert is_complete(path) is False and image_size(path) is None  # a FIFO blocked open() forever


@pytest.mark.parametrize("kind", KINDS)
def test_a_special_servers_file_is_one_line(tmp_path: Path, kind: str) -> None:
    from scene_telemetry.farm.servers import load_servers_file

    path = tmp_path / "servers.txt"
    special(path, kind)
    with pytest.raises(InvalidInputError, match="not a regular file"):
        load_servers_file(path)


@pytest.mark.parametrize("kind", KINDS)
def test_state_files_of_the_sentinel_and_the_farm_are_never_blocked_on(tmp_path: Path, kind: str) -> None:
    from scene_telemetry.farm.tasks import read_record
    from scene_telemetry.sentinel._journal import Journal

    state = tmp_path / "sentinel-state.json"
    special(state, kind)
    with pytest.raises(InvalidInputError, match="not a regular file"):
        Journal.load(state)
    record = tmp_path / "a.json"
    special(record, kind)
    assert read_record(record) is None
