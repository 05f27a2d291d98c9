"""Bad input to the farm commands: one clear line on stderr, the documented exit code, nothing queued."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scene_telemetry.cli.main import main

REPO = Path(__file__).resolve().parents[1]


def _files(tmp_path: Path) -> list[str]:
    (tmp_path / "wf.json").write_text(json.dumps({"1": {"class_type": "EmptyImage", "inputs": {}}}))
    (tmp_path / "scenes.json").write_text(json.dumps([{"id": "s0"}]))
    return [str(tmp_path / "wf.json"), "--scenes", str(tmp_path / "scenes.json"), "--out", str(tmp_path / "run")]


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_an_unreadable_servers_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", *_files(tmp_path), "--servers", str(tmp_path / "missing.txt")])
    assert code == 2 and "--servers" in _one_line(capsys)


def test_a_servers_file_line_that_is_not_a_url_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "servers.txt").write_text("http://127.0.0.1:1\nnot a url\n")
    code = main(["run", *_files(tmp_path), "--servers", str(tmp_path / "servers.txt")])
    assert code == 2 and "line 2" in _one_line(capsys)


def test_one_output_folder_for_several_servers_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", *_files(tmp_path), "--server", "http://127.0.0.1:1", "--server", "http://127.0.0.1:2"]
    code = main([*args, "--comfy-output-dir", str(tmp_path)])
    assert code == 2 and "/view" in _one_line(capsys)


def test_a_bad_per_server_count_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *_files(tmp_path), "--per-server", "0"])
    assert exit_info.value.code == 2


def test_submit_refuses_an_editor_workflow_before_touching_the_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    editor = next((REPO / "example_workflows").glob("*.json"))
    files = _files(tmp_path)
    code = main(["farm", "submit", str(editor), *files[1:], "--broker", "redis://127.0.0.1:1/0"])
    assert code == 2 and "API-format" in _one_line(capsys)


def test_submit_with_a_missing_scene_list_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _files(tmp_path)
    files[2] = str(tmp_path / "nope.yaml")
    code = main(["farm", "submit", *files, "--broker", "redis://127.0.0.1:1/0"])
    assert code == 2 and "nope.yaml" in _one_line(capsys)


def test_a_worker_whose_server_does_not_answer_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["farm", "worker", "--broker", "redis://:secret@127.0.0.1:1/0", "--server", "http://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 10 and "did not answer /system_stats" in err and "secret" not in err and "Traceback" not in err


def test_a_record_an_earlier_runs_straggler_wrote_is_not_taken_for_this_runs(tmp_path: Path) -> None:
    from scene_telemetry.farm.tasks import read_record

    path = tmp_path / "s0.json"
    path.write_text(json.dumps({"RunId": "run-old", "SceneId": "s0", "Document": {"HistoryExitReason": "success"}}))
    assert read_record(path, "run-new") is None
    record = read_record(path, "run-old")
    assert record is not None and record["SceneId"] == "s0"
    path.write_text("[1, 2]")
    assert read_record(path) is None  # not a record at all
