"""Command-line behaviour a pipeline engineer relies on (issue 9, item 7).

Usage errors are exit 2 with one line, never a traceback; rows name the two sources they compare;
``--json`` is one contract for every outcome; piping into ``head`` is quiet.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from run_factory import Run, make_run
from scene_telemetry.cli.main import main
from scene_telemetry.telemetry import validate_run


@pytest.fixture
def run(output_dir: Path) -> Run:
    return make_run(output_dir)


# --- validate ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_validate_output_dir_that_is_not_a_folder_is_exit_2(
    run: Run, tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "nope"
    if kind == "file":
        output.write_text("x")
    assert main(["validate", str(run.run_dir), "--output-dir", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--output-dir" in err and str(output) in err


def test_a_telemetry_file_mismatch_names_telemetry_and_metadata(run: Run) -> None:
    document = json.loads(run.telemetry_path.read_text("utf-8"))
    document["SceneAttempts"] = 7
    run.telemetry_path.write_text(json.dumps(document), "utf-8")
    text = validate_run(run.run_dir).render_text(problems_only=True)
    line = next(x for x in text.splitlines() if "SceneAttempts" in x)
    assert "telemetry=7 metadata=null" in line and "summary=" not in line, line


def test_a_marker_mismatch_names_marker_and_scene(run: Run) -> None:
    metadata = run.metadata()
    metadata["Scenes"][0]["Frames"]["Count"] = 9
    from run_factory import write_pair

    write_pair(run, metadata)
    text = validate_run(run.run_dir).render_text(problems_only=True)
    line = next(x for x in text.splitlines() if "marker.FrameCount" in x)
    assert "marker=3 scene=9" in line and "summary=" not in line, line


def test_validate_json_honours_problems(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    run.summary_path.write_text(run.summary().replace("SceneRetryBudget=1", "SceneRetryBudget=3"), "utf-8")
    assert main(["validate", str(run.run_dir), "--json", "--problems"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] and {r["verdict"] for r in report["rows"]} <= {"fail", "error", "warn"}
    assert report["counts"]["pass"] > 0  # the counts still describe the whole report


# --- wait ----------------------------------------------------------------------------------------------------------


def _scene(output_dir: Path, prompt_id: str | None = "p1") -> Path:
    import numpy as np
    from scene_telemetry.telemetry import SceneContext, write_frames_with_marker

    images = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    return write_frames_with_marker(
        images, output_dir, "s/frame", context=SceneContext(prompt_id=prompt_id)
    ).marker_path


@pytest.mark.parametrize("what", ["png", "folder-named-done", "50-MB-done"])
def test_wait_fails_at_once_on_what_can_never_become_a_marker(
    output_dir: Path, what: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    marker = _scene(output_dir)
    if what == "png":
        path = next(marker.parent.glob("*.png"))
    elif what == "folder-named-done":
        path = output_dir / "x.done"
        path.mkdir()
    else:
        path = output_dir / "big.done"
        with path.open("wb") as handle:
            handle.truncate(50 * 1024 * 1024)
    started = time.monotonic()
    assert main(["wait", str(path), "--timeout", "30", "--json"]) == 2
    assert time.monotonic() - started < 5
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "never" in err, err
    result = json.loads(out)
    assert result["ok"] is False and result["exit_code"] == 2 and result["reason"] == "not-a-marker"


def test_wait_json_writes_a_result_on_timeout(output_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wait", str(output_dir / "frame.done"), "--timeout", "0.2", "--json"]) == 3
    result = json.loads(capsys.readouterr().out)
    assert result == {
        "ok": False,
        "exit_code": 3,
        "reason": "timeout",
        "path": str(output_dir / "frame.done"),
        "problem": "frame.done does not exist yet",
    }


def test_wait_never_prints_prompt_none(output_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = _scene(output_dir, prompt_id=None)
    assert main(["wait", str(marker), "--timeout", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("done: 2 file(s), ") and "None" not in out and "prompt" not in out


def test_wait_for_a_folder_that_does_not_exist_yet(output_dir: Path) -> None:
    import threading

    from scene_telemetry.telemetry import wait_for_done

    thread = threading.Timer(0.2, lambda: _scene(output_dir))
    thread.start()
    try:
        assert wait_for_done(output_dir / "s", 10, poll_interval=0.05)["FrameCount"] == 2
    finally:
        thread.join()


# --- piping into head -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["demo", "--frames", "2"], ["gpu"], ["contract"]])
@pytest.mark.skipif(os.name == "nt", reason="EPIPE and exit 141 are POSIX pipe semantics")
def test_a_closed_pipe_is_quiet(tmp_path: Path, command: list[str]) -> None:
    """``scene-telemetry demo | head -1`` once head has exited: no BrokenPipeError traceback, exit 141 (SIGPIPE's)."""
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    argv = [*command, "--out", str(tmp_path / "demo")] if command[0] == "demo" else command
    try:
        done = subprocess.run(
            [sys.executable, "-m", "scene_telemetry.cli", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 141, done.stderr


# --- demo ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--frames", "-1"], "--frames"),
        (["--frames", "0"], "--frames"),
        (["--width", "100000", "--height", "100000"], "--width"),
        (["--width", "16384", "--height", "16384", "--frames", "1000"], "GiB"),
        (["--scene-id", "../escape"], "--scene-id"),
    ],
    ids=["frames-negative", "frames-zero", "huge-frame", "huge-batch", "scene-id-escape"],
)
def test_demo_usage_errors_are_exit_2_with_one_line(
    tmp_path: Path, argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["demo", "--out", str(tmp_path / "demo"), *argv])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert says in err.splitlines()[-1] and "Traceback" not in err
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("kind", ["existing-file", "proc"])
def test_demo_unwritable_out_is_exit_2_with_one_line(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if kind == "existing-file":
        out = tmp_path / "file"
        out.write_text("x")
    else:
        out = Path("/proc/nope")
    assert main(["demo", "--out", str(out), "--frames", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err


def test_a_second_demo_starts_a_fresh_scene_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "3"]) == 0
    assert main(["demo", "--out", str(out), "--frames", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    folders = [line.split(": ", 1)[1] for line in lines if line.startswith("scene folder")]
    assert [Path(f).name for f in folders] == ["demo-scene", "demo-scene-2"]
    for folder in folders:
        assert len(list(Path(folder).glob("*.png"))) == 3
        assert validate_run(folder).ok


# --- run --json: one contract for every outcome -----------------------------------------------------------------------


def _run_files(
    tmp_path: Path, scenes: str = "- id: a\n  seed: 3\n", mapping: str = '{"seed": "id:2.seed"}'
) -> list[str]:
    workflow = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": 1, "strength": 0.5}},
        "3": {
            "class_type": "SceneTelemetry_WriteDoneMarker",
            "inputs": {"images": ["2", 0], "filename_prefix": "x/frame", "scene_id": ""},
        },
    }
    (tmp_path / "wf.json").write_text(json.dumps(workflow))
    (tmp_path / "scenes.yaml").write_text(scenes)
    (tmp_path / "map.json").write_text(mapping)
    return [
        str(tmp_path / "wf.json"),
        "--scenes",
        str(tmp_path / "scenes.yaml"),
        "--mapping",
        str(tmp_path / "map.json"),
    ]


def _last_event(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    lines = capsys.readouterr().out.splitlines()
    assert lines, "nothing on stdout"
    events = [json.loads(line) for line in lines]
    assert all("event" in e for e in events)
    result: dict[str, object] = events[-1]
    return result


RESULT_KEYS = {"event", "run_id", "run_dir", "ok", "exit_code", "validation_ok", "report", "scenes"}


@pytest.mark.parametrize(
    ("case", "code", "stage"),
    [("bad-scene-file", 2, "input"), ("bad-policy", 2, "usage"), ("no-server", 10, "preflight")],
)
def test_run_json_ends_with_the_result_event_when_the_run_never_starts(
    tmp_path: Path, case: str, code: int, stage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _run_files(tmp_path, scenes="- id: ../x\n" if case == "bad-scene-file" else "- id: a\n  seed: 3\n")
    argv += ["--out", str(tmp_path / "run"), "--json", "--server", "http://127.0.0.1:9", "--run-id", "r1"]
    if case == "bad-policy":
        argv += ["--max-wait-seconds", "-3"]
    assert main(["run", *argv]) == code
    result = _last_event(capsys)
    assert RESULT_KEYS <= set(result) and result["event"] == "result"
    assert result["ok"] is False and result["exit_code"] == code and result["stage"] == stage and result["scenes"] == []
    assert result["run_id"] == "r1" and isinstance(result["reason"], str)


def test_run_json_invalid_mapping_lists_the_problems_in_the_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fake_comfy import FakeComfy, Scenario

    argv = _run_files(tmp_path, mapping='{"seed": "id:2.sead"}')
    with FakeComfy(Scenario()) as fake:
        code = main(["run", *argv, "--out", str(tmp_path / "run"), "--json", "--server", fake.url, "--no-gpu"])
    result = _last_event(capsys)
    assert code == 13 and result["event"] == "result" and result["exit_code"] == 13 and result["stage"] == "invalid"
    assert isinstance(result["problems"], list) and "has no input 'sead'" in result["problems"][0]
