"""``scene-telemetry validate RUN_DIR [--json]``: exit codes 0/1/2 and both output forms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_factory import Run, make_run, replace_line
from scene_telemetry.cli.main import main


@pytest.fixture
def run(output_dir: Path) -> Run:
    """A good run written by the collector."""
    return make_run(output_dir)


def test_ok_exits_0_with_a_text_report(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(run.run_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{run.run_dir}: OK: ")
    assert any(line.startswith("PASS  poll-limit") for line in lines)


def test_mismatch_exits_1_and_json_names_field_and_values(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    run.summary_path.write_text(replace_line(run.summary(), "pollLimit=unbounded", "pollLimit=3"), "utf-8")
    assert main(["validate", str(run.run_dir), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["unreadable"] is False
    (bad,) = [r for r in report["rows"] if r["verdict"] == "fail"]
    assert (bad["scene"], bad["field"], bad["summary"], bad["metadata"]) == ("s01", "pollLimit", "3", "unbounded")


def test_problems_only(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    run.telemetry_path.unlink()
    assert main(["validate", "--problems", str(run.run_dir)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("FAIL  telemetry-file")


@pytest.mark.parametrize("damage", ["missing", "latin-1", "huge"])
def test_unreadable_input_exits_2(run: Run, damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    if damage == "missing":
        run.metadata_path.unlink()
    elif damage == "latin-1":
        run.summary_path.write_bytes("RunId=é\n".encode("latin-1"))
    else:
        with run.metadata_path.open("r+b") as handle:
            handle.truncate(100 * 1024 * 1024)
    assert main(["validate", str(run.run_dir)]) == 2
    captured = capsys.readouterr()
    assert "UNREADABLE" in captured.out and "Traceback" not in captured.out + captured.err


def test_not_a_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "missing"), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["rows"][0]["message"] == "not a folder"


def test_headless_markers_found_with_output_dir(output_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run folder outside the frames' folder finds each marker through --output-dir."""
    from scene_telemetry.telemetry import build_run_metadata, write_run

    scenes = [make_run(output_dir, scene_id=name).scene for name in ("a", "b")]
    run_dir = output_dir.parent / "runs" / "r1"
    write_run(run_dir, build_run_metadata(scenes, run_id="r1", writer="runner"))
    assert main(["validate", str(run_dir)]) == 1
    capsys.readouterr()
    assert main(["validate", str(run_dir), "--output-dir", str(output_dir)]) == 0
