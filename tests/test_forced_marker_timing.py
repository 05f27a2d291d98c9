"""The runner's own forced marker passes the runner's own validation (issue 9, item 4).

A ``runner-forced`` marker is written after completion by design (after the marker wait and a quiet
period), so its ``CreatedAt`` (the scene's ``FramesDurableAt``) follows ``QueueEnd``. The contract says
so and the validator orders such a scene's timestamps accordingly; before, every run whose marker was
forced more than the 2 s clock-skew slack after completion failed its final validation (exit 21).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import FakeComfy, Scenario
from run_factory import Run, edited, make_run, write_pair
from scene_telemetry.cli.main import main
from scene_telemetry.telemetry import load_schema, validate_run
from scene_telemetry.telemetry._meta import iso_utc, parse_iso

MARKER_CLASS = "SceneTelemetry_WriteDoneMarker"
WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 3, "color": 0}},
    "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": 1, "strength": 0.5}},
    "3": {"class_type": MARKER_CLASS, "inputs": {"images": ["2", 0], "filename_prefix": "x/frame", "scene_id": ""}},
}


def _shifted(run: Run, *, forced: bool, durable_after_end_s: float) -> dict[str, Any]:
    """The run's metadata with FramesDurableAt moved *durable_after_end_s* past QueueEnd (CreatedAt after it)."""
    metadata = run.metadata()
    scene = metadata["Scenes"][0]
    end = parse_iso(scene["QueueEnd"])
    durable = end + timedelta(seconds=durable_after_end_s)
    created = iso_utc(durable + timedelta(seconds=0.5))
    metadata["CreatedAt"] = created
    return edited(metadata, ForcedCopyTriggered=forced, FramesDurableAt=iso_utc(durable), CreatedAt=created)


def timestamp_failures(run_dir: Path) -> list[str]:
    return [r.message for r in validate_run(run_dir).rows if r.check == "timestamps" and r.verdict == "fail"]


@pytest.fixture
def run(output_dir: Path) -> Run:
    return make_run(output_dir)


def test_a_forced_marker_after_queue_end_is_in_order(run: Run) -> None:
    write_pair(run, _shifted(run, forced=True, durable_after_end_s=35.0))
    assert timestamp_failures(run.run_dir) == []


def test_a_node_marker_after_queue_end_still_fails(run: Run) -> None:
    write_pair(run, _shifted(run, forced=False, durable_after_end_s=35.0))
    assert timestamp_failures(run.run_dir) == ["FramesDurableAt is later than QueueEnd"]


def test_a_forced_marker_still_precedes_the_record(run: Run) -> None:
    metadata = _shifted(run, forced=True, durable_after_end_s=35.0)
    metadata["Scenes"][0]["CreatedAt"] = metadata["Scenes"][0]["QueueEnd"]
    write_pair(run, metadata)
    assert timestamp_failures(run.run_dir) == ["FramesDurableAt is later than CreatedAt"]


def test_the_contract_says_when_a_forced_marker_is_durable() -> None:
    description = load_schema("scene-telemetry")["properties"]["FramesDurableAt"]["description"]
    assert "runner-forced" in description and "after QueueEnd" in description


def test_a_run_with_a_forced_marker_passes_its_final_validation(
    tmp_path: Path, output_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end: no marker comes, the runner forces one 0.5 s + 2 s quiet period after completion."""
    (tmp_path / "wf.json").write_text(json.dumps(WORKFLOW))
    (tmp_path / "scenes.yaml").write_text("- id: a\n  seed: 3\n")
    (tmp_path / "map.json").write_text(json.dumps({"seed": "id:2.seed"}))
    with FakeComfy(Scenario(write_marker=False), output_dir=output_dir) as fake:
        argv = [str(tmp_path / "wf.json"), "--scenes", str(tmp_path / "scenes.yaml")]
        argv += ["--mapping", str(tmp_path / "map.json"), "--server", fake.url, "--out", str(tmp_path / "run")]
        argv += ["--comfy-output-dir", str(output_dir), "--json", "--no-gpu", "--run-id", "r1"]
        code = main(
            ["run", *argv, "--post-execution-timeout-seconds", "0.5", "--history-poll-interval-seconds", "0.05"]
        )
    result = [json.loads(line) for line in capsys.readouterr().out.splitlines()][-1]
    scene = json.loads((tmp_path / "run" / "artifact-metadata.json").read_text("utf-8"))["Scenes"][0]
    assert scene["ForcedCopyTriggered"] is True
    assert (parse_iso(scene["FramesDurableAt"]) - parse_iso(scene["QueueEnd"])).total_seconds() > 2.0
    assert code == 0 and result["ok"] is True, result
    assert validate_run(tmp_path / "run", output_dir=output_dir).ok
