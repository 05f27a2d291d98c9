"""RunSummaryValidator node: verdict in ui, ok/report outputs, fail_on_mismatch, run_dir containment."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from run_factory import Run, make_run, replace_line
from scene_telemetry.nodes import NODE_CLASS_MAPPINGS, _comfy
from scene_telemetry.nodes.validator import RunSummaryValidator
from scene_telemetry.telemetry import InvalidInputError, UnsafePathError, ValidationFailed


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, output_dir: Path) -> Run:
    """A good run inside the (stand-in) ComfyUI output directory."""
    monkeypatch.setattr(_comfy, "output_directory", lambda: str(output_dir))
    return make_run(output_dir)


def telemetry_of(run: Run) -> dict[str, Any]:
    return {"run_dir": str(run.run_dir), "scene": run.scene}


def tamper(run: Run) -> None:
    run.summary_path.write_text(replace_line(run.summary(), "SceneRetryBudget=1", "SceneRetryBudget=4"), "utf-8")


def test_declaration() -> None:
    types = RunSummaryValidator.INPUT_TYPES()
    assert types["required"]["fail_on_mismatch"] == ("BOOLEAN", types["required"]["fail_on_mismatch"][1])
    assert types["optional"]["telemetry"][0] == "SCENE_TELEMETRY"
    assert (RunSummaryValidator.RETURN_TYPES, RunSummaryValidator.RETURN_NAMES) == (
        ("BOOLEAN", "STRING"),
        ("ok", "report"),
    )
    assert NODE_CLASS_MAPPINGS["SceneTelemetry_RunSummaryValidator"] is RunSummaryValidator
    assert RunSummaryValidator.OUTPUT_NODE is True and math.isnan(RunSummaryValidator.IS_CHANGED())


def test_good_run_from_the_collector_output(run: Run) -> None:
    out = RunSummaryValidator().validate(fail_on_mismatch=True, telemetry=telemetry_of(run))
    ok, report = out["result"]
    assert ok is True
    assert out["ui"]["text"][0].startswith("OK: ") and len(out["ui"]["text"]) == 1
    assert report.splitlines()[0] == f"{run.run_dir}: {out['ui']['text'][0]}"


def test_mismatch_is_reported_in_ui_and_report(run: Run) -> None:
    tamper(run)
    out = RunSummaryValidator().validate(telemetry=telemetry_of(run))
    ok, report = out["result"]
    assert ok is False
    assert out["ui"]["text"][0].startswith("FAILED: ")
    assert out["ui"]["text"][1].startswith("FAIL  retry-budget") and "summary=4 metadata=1" in out["ui"]["text"][1]
    assert "FAIL  retry-budget" in report


def test_fail_on_mismatch_fails_the_prompt(run: Run) -> None:
    tamper(run)
    with pytest.raises(ValidationFailed) as caught:
        RunSummaryValidator().validate(fail_on_mismatch=True, telemetry=telemetry_of(run))
    assert "SceneRetryBudget" in str(caught.value) and caught.value.path == str(run.run_dir)


def test_run_dir_relative_to_the_output_dir(run: Run) -> None:
    ok, _report = RunSummaryValidator().validate(run_dir="s01")["result"]
    assert ok is True


@pytest.mark.parametrize("run_dir", ["..", "../elsewhere", "/etc", "s01/../../x"])
def test_run_dir_escaping_the_output_dir_is_refused(run: Run, run_dir: str) -> None:
    with pytest.raises(UnsafePathError):
        RunSummaryValidator().validate(run_dir=run_dir)


def test_symlink_escape_is_refused(run: Run, output_dir: Path, tmp_path: Path) -> None:
    (output_dir / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError):
        RunSummaryValidator().validate(run_dir="link")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({}, "run_dir"), ({"run_dir": "a\x00b"}, "run_dir"), ({"telemetry": {"scene": {}}}, "telemetry")],
)
def test_bad_inputs(run: Run, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        RunSummaryValidator().validate(**kwargs)
    assert caught.value.field == field


def test_unreadable_run_is_a_verdict_not_a_traceback(run: Run) -> None:
    run.metadata_path.write_bytes(b"\xff\xfe{\x00")
    ok, report = RunSummaryValidator().validate(run_dir="s01")["result"]
    assert ok is False and "UNREADABLE" in report and "UTF-16" in report
