"""Command-line behaviour a pipeline engineer relies on (issue 9, item 7).

Usage errors are exit 2 with one line, never a traceback; rows name the two sources they compare;
``--json`` is one contract for every outcome; piping into ``head`` is quiet.
"""

from __future__ import annotations

import json
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
