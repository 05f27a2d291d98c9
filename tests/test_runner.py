"""The headless runner against the fault-injecting ComfyUI stand-in (tests/fake_comfy.py)."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import FakeComfy, Scenario
from scene_telemetry.cli.main import main
from scene_telemetry.comfy_api.client import ComfyClient
from scene_telemetry.comfy_api.preflight import (
    EXIT_NODES_MISSING,
    EXIT_SERVER_UNREACHABLE,
    run_preflight,
)
from scene_telemetry.runner.markers import MarkerCollector
from scene_telemetry.runner.policy import QueuePolicy
from scene_telemetry.runner.runner import STATE_FILE, Runner, RunOptions, prompt_id_for, scene_worst_case_s
from scene_telemetry.runner.scenes import MARKER_CLASS, Scene, parse_mapping
from scene_telemetry.telemetry import Deadline, read_marker, validate_document, validate_run

# Small budgets: every failure path must end quickly, and within them.
FAST = QueuePolicy(
    max_wait_seconds=5.0,
    history_poll_interval_seconds=0.05,
    max_attempt_count=0,
    post_execution_timeout_seconds=0.5,
    scene_retry_budget=1,
)
QUIET_S = 0.1

WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 3, "color": 0}},
    "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": 1, "strength": 0.5}},
    "3": {"class_type": MARKER_CLASS, "inputs": {"images": ["2", 0], "filename_prefix": "x/frame", "scene_id": ""}},
}
MAPPING = parse_mapping({"seed": "id:2.seed"})


def _runner(fake: FakeComfy, tmp_path: Path, *, policy: QueuePolicy = FAST, local: bool = True, **kw: Any) -> Runner:
    options = RunOptions(
        server=fake.url,
        run_dir=tmp_path / "run",
        policy=policy,
        run_id=kw.pop("run_id", "run1"),
        comfy_output_dir=fake.output_dir if local else None,
        forced_quiet_period_s=QUIET_S,
        marker_poll_interval_s=0.05,
        gpu_snapshots=kw.pop("gpu_snapshots", False),
        server_grace_s=kw.pop("server_grace_s", 2.0),
        **kw,
    )
    return Runner(ComfyClient(fake.url, request_timeout_s=2.0), WORKFLOW, MAPPING, options)


def _scenes(*ids: str) -> list[Scene]:
    return [Scene(sid, {"seed": n}) for n, sid in enumerate(ids)]


def test_scenes_succeed_with_verified_markers_and_a_valid_run_folder(tmp_path: Path, output_dir: Path) -> None:
    with FakeComfy(Scenario(), output_dir=output_dir) as fake:
        result = _runner(fake, tmp_path).run(_scenes("a", "b"))
    assert result.ok and result.validation_ok
    assert [s.exit_reason for s in result.scenes] == ["success", "success"]
    prompts = [body["prompt"] for body in fake.submissions]
    assert [p["3"]["inputs"]["filename_prefix"] for p in prompts] == ["run1/a/frame", "run1/b/frame"]
    assert [p["2"]["inputs"]["seed"] for p in prompts] == [0, 1]
    assert [b["prompt_id"] for b in fake.submissions] == [prompt_id_for("run1", s, 1) for s in ("a", "b")]
    for outcome in result.scenes:
        doc = outcome.document
        validate_document(doc, "scene-telemetry")
        assert doc["Writer"] == "runner" and doc["DoneMarkerDetected"] is True
        assert doc["ForcedCopyTriggered"] is False and doc["SceneAttempts"] == 1
        assert doc["ExecutionSuccessDetected"] is True and doc["HistoryAttempts"] >= 1
        assert doc["PollLimit"] == "unbounded" and doc["MaxWaitSeconds"] == FAST.max_wait_seconds
        assert doc["Frames"]["Count"] == 3 and doc["Frames"]["Subfolder"] == f"run1/{outcome.scene_id}"
        marker = read_marker(output_dir / "run1" / outcome.scene_id / "frame.done")
        assert marker["PromptId"] == outcome.prompt_id and marker["Source"] == "node"
    metadata = json.loads((tmp_path / "run" / "artifact-metadata.json").read_text())
    assert metadata["Writer"] == "runner" and metadata["SceneCount"] == 2
    assert validate_run(tmp_path / "run", output_dir=output_dir).ok


def test_execution_error_spends_the_retry_budget(tmp_path: Path, output_dir: Path) -> None:
    with FakeComfy([Scenario(case="error"), Scenario()], output_dir=output_dir) as fake:
        result = _runner(fake, tmp_path).run(_scenes("a"))
    doc = result.scenes[0].document
    assert result.ok and doc["SceneAttempts"] == 2 and doc["HistoryExitReason"] == "success"
    assert len({b["prompt_id"] for b in fake.submissions}) == 2  # a retry is a new prompt, the old history stays


def test_execution_error_without_budget_is_final(tmp_path: Path, output_dir: Path) -> None:
    policy = QueuePolicy(5.0, 0.05, 0, 0.5, scene_retry_budget=0)
    with FakeComfy(Scenario(case="error"), output_dir=output_dir) as fake:
        result = _runner(fake, tmp_path, policy=policy).run(_scenes("a"))
    doc = result.scenes[0].document
    assert not result.ok and doc["HistoryExitReason"] == "executionError"
    assert doc["SceneAttempts"] == 1 and doc["Frames"] is None and doc["ExitDetail"]
    assert len(fake.submissions) == 1


def test_validation_error_is_final_and_spends_nothing(tmp_path: Path, output_dir: Path) -> None:
    with FakeComfy(Scenario(reject="bad_input"), output_dir=output_dir) as fake:
        result = _runner(fake, tmp_path).run(_scenes("a"))
    doc = result.scenes[0].document
    assert doc["HistoryExitReason"] == "validationError" and doc["SceneAttempts"] == 1
    assert doc["PromptId"] is None and "prompt_outputs_failed_validation" in doc["ExitDetail"]
    assert len(fake.submissions) == 1


def test_missing_marker_falls_back_to_a_forced_marker_loudly(
    tmp_path: Path, output_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with FakeComfy(Scenario(write_marker=False), output_dir=output_dir) as fake:
        started = time.monotonic()
        result = _runner(fake, tmp_path).run(_scenes("a"))
        elapsed = time.monotonic() - started
    doc = result.scenes[0].document
    assert doc["HistoryExitReason"] == "success" and doc["ForcedCopyTriggered"] is True
    assert doc["DoneMarkerDetected"] is False and doc["DoneMarkerWaitSeconds"] >= FAST.post_execution_timeout_seconds
    marker = read_marker(output_dir / "run1" / "a" / "frame.done")
    assert marker["Source"] == "runner-forced" and marker["FrameCount"] == 3
    assert any("forced" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert result.ok and elapsed < FAST.post_execution_timeout_seconds + QUIET_S + 3.0


def test_history_never_written_ends_as_post_execution(tmp_path: Path, output_dir: Path) -> None:
    with FakeComfy(Scenario(history_never=True), output_dir=output_dir) as fake:
        started = time.monotonic()
        result = _runner(fake, tmp_path).run(_scenes("a"))
        elapsed = time.monotonic() - started
    doc = result.scenes[0].document
    assert doc["HistoryExitReason"] == "postExecution"
    assert doc["HistoryPostExecutionTimeoutReached"] is True and doc["ExecutionSuccessDetected"] is True
    assert not result.ok and elapsed < FAST.post_execution_timeout_seconds + 3.0


def test_prompt_lost_to_a_restart_is_resubmitted_within_budget(tmp_path: Path, output_dir: Path) -> None:
    scenarios = [Scenario(restart_after=3, down_s=0.3), Scenario()]
    with FakeComfy(scenarios, output_dir=output_dir) as fake:
        result = _runner(fake, tmp_path).run(_scenes("a"))
    doc = result.scenes[0].document
    assert fake.restarts == 1
    assert doc["HistoryExitReason"] == "success" and doc["SceneAttempts"] == 2 and result.ok


def test_remote_server_marker_through_view_copies_frames(tmp_path: Path, output_dir: Path) -> None:
    with FakeComfy(Scenario(), output_dir=output_dir) as fake:
        result = _runner(fake, tmp_path, local=False).run(_scenes("a"))
    assert result.ok and result.scenes[0].document["DoneMarkerDetected"] is True
    assert any(path.startswith("/view?filename=frame.done") for _, path in fake.requests)
    copy = tmp_path / "run" / "a"
    assert read_marker(copy / "frame.done")["FrameCount"] == len(list(copy.glob("*.png"))) == 3
    assert validate_run(tmp_path / "run").ok


def test_resume_keeps_finished_scenes_and_submits_nothing_again(tmp_path: Path, output_dir: Path) -> None:
    with FakeComfy(Scenario(), output_dir=output_dir) as fake:
        first = _runner(fake, tmp_path).run(_scenes("a"))
        assert json.loads((tmp_path / "run" / STATE_FILE).read_text())["RunId"] == "run1"
        second = _runner(fake, tmp_path, resume=True).run(_scenes("a", "b"))
    assert first.ok and second.ok
    assert [b["prompt_id"] for b in fake.submissions] == [prompt_id_for("run1", s, 1) for s in ("a", "b")]
    assert second.scenes[0].document == first.scenes[0].document


def test_resume_reattaches_to_a_known_prompt(tmp_path: Path, output_dir: Path) -> None:
    with FakeComfy(Scenario(), output_dir=output_dir) as fake:
        client = ComfyClient(fake.url)
        prompt_id = prompt_id_for("run1", "a", 1)
        runner = _runner(fake, tmp_path, resume=True)
        runner.state.scenes["a"] = {"PromptIds": [prompt_id], "Document": None}
        prompt = json.loads(json.dumps(WORKFLOW))
        prompt["3"]["inputs"]["filename_prefix"] = "run1/a/frame"
        client.submit(prompt, prompt_id=prompt_id)  # an earlier run's submission, finished meanwhile
        deadline = time.monotonic() + 5
        while client.history(prompt_id) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        result = runner.run(_scenes("a"))
    assert len(fake.submissions) == 1 and result.ok
    assert result.scenes[0].prompt_id == prompt_id


def test_preflight_failures_have_distinct_codes(output_dir: Path) -> None:
    with FakeComfy(Scenario(), system_stats_500=5) as fake:
        sleeps: list[float] = []
        report = run_preflight(ComfyClient(fake.url), ["EmptyImage"], server=fake.url, sleep=sleeps.append)
        assert report.failure is not None and report.failure.exit_code == EXIT_SERVER_UNREACHABLE
        assert sleeps == [0.5, 0.5] and report.system_stats_tries == 3
    with FakeComfy(Scenario()) as fake:
        report = run_preflight(ComfyClient(fake.url), ["EmptyImage", "NoSuchNode"], server=fake.url)
        assert report.failure is not None and report.failure.exit_code == EXIT_NODES_MISSING
        assert "NoSuchNode" in report.failure.reason and "EmptyImage" not in report.failure.reason


def test_preflight_warns_on_low_vram() -> None:
    stats = json.loads(
        (Path(__file__).resolve().parent / "data/comfyui-0.8.0/transcripts/system_stats.json").read_text()
    )
    stats["devices"] = [dict(stats["devices"][0], type="cuda", index=0, name="cuda:0 RTX", vram_free=512 * 2**20)]
    with FakeComfy(Scenario(), system_stats=stats) as fake:
        report = run_preflight(ComfyClient(fake.url), ["EmptyImage"], server=fake.url, min_free_vram_mb=1024)
    assert report.ok and report.warnings == ["low VRAM: 512 MiB free on cuda:0 RTX (threshold 1024 MiB)"]


def _write_inputs(tmp_path: Path, mapping: dict[str, Any]) -> list[str]:
    (tmp_path / "wf.json").write_text(json.dumps(WORKFLOW))
    (tmp_path / "scenes.yaml").write_text("- id: a\n  seed: 3\n")
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    return [
        str(tmp_path / "wf.json"),
        "--scenes",
        str(tmp_path / "scenes.yaml"),
        "--mapping",
        str(tmp_path / "map.json"),
    ]


def test_cli_run_json_result_and_exit_code(
    tmp_path: Path, output_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeComfy(Scenario(), output_dir=output_dir) as fake:
        argv = ["run", *_write_inputs(tmp_path, {"seed": "id:2.seed"}), "--server", fake.url]
        argv += ["--out", str(tmp_path / "run"), "--comfy-output-dir", str(output_dir), "--json", "--no-gpu"]
        code = main([*argv, "--fast-iteration", "--run-id", "r9"])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    start = events[0]
    assert start["event"] == "run_start"
    options = RunOptions(
        fake.url, tmp_path / "run", QueuePolicy(**start["policy"]), "r9", output_dir, gpu_snapshots=False
    )
    assert start["scene_worst_case_seconds"] == pytest.approx(scene_worst_case_s(options), abs=1e-3)
    assert events[-1]["event"] == "result" and events[-1]["ok"] is True
    assert events[-1]["scenes"][0]["exit_reason"] == "success"
    assert fake.submissions[0]["prompt"]["3"]["inputs"]["filename_prefix"] == "r9/a/frame"


def test_cli_invalid_mapping_queues_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeComfy(Scenario()) as fake:
        argv = ["run", *_write_inputs(tmp_path, {"seed": "id:2.sead"}), "--server", fake.url]
        code = main([*argv, "--out", str(tmp_path / "run"), "--no-gpu"])
    assert code == 13 and fake.submissions == []
    assert "mapping field 'seed' → node 2 (ImageAddNoise): has no input 'sead'" in capsys.readouterr().err


def test_cli_bad_policy_value_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", *_write_inputs(tmp_path, {}), "--out", str(tmp_path / "run"), "--max-wait-seconds", "-3"]
    assert main(argv) == 2
    assert "--max-wait-seconds" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("scenario", "reason", "ok"),
    [
        (Scenario(history_delay_s=0.2), "success", True),
        (Scenario(drop_ws_after=2, ws_refuse_s=0.3), "success", True),
        (Scenario(history_500=2), "success", True),
        (Scenario(case="interrupted"), "interrupted", False),
        (Scenario(restart_after=3, down_s=None), "serverLost", False),
    ],
    ids=["history-late", "ws-dropped", "http-500", "interrupted", "server-gone"],
)
def test_each_fault_ends_within_budget_with_its_exit_reason(
    tmp_path: Path, output_dir: Path, scenario: Scenario, reason: str, ok: bool
) -> None:
    grace = 0.5
    with FakeComfy(scenario, output_dir=output_dir) as fake:
        started = time.monotonic()
        result = _runner(fake, tmp_path, server_grace_s=grace).run(_scenes("a"))
        elapsed = time.monotonic() - started
    doc = result.scenes[0].document
    assert doc["HistoryExitReason"] == reason and result.scenes[0].ok is ok
    assert doc["SceneAttempts"] == 1  # none of these spends the retry budget
    assert (doc["Frames"] is not None) is ok and doc["DoneMarkerDetected"] is ok
    assert (doc["ExitDetail"] is None) is ok
    assert elapsed < FAST.max_wait_seconds


def test_collector_record_beside_the_frames_is_merged(tmp_path: Path, output_dir: Path) -> None:
    import numpy as np
    from scene_telemetry.runner.documents import scene_document
    from scene_telemetry.runner.outcomes import MarkerOutcome
    from scene_telemetry.telemetry import (
        SceneContext,
        build_run_metadata,
        build_scene_telemetry,
        write_frames_with_marker,
        write_run,
    )

    prompt_id = prompt_id_for("run1", "a", 1)
    done = write_frames_with_marker(
        np.zeros((2, 8, 8, 3), dtype=np.float32),
        output_dir,
        "run1/a/frame",
        context=SceneContext(prompt_id=prompt_id, scene_id="a"),
        embed_metadata=False,
    )
    graph = build_scene_telemetry(
        marker=done.as_output(),
        scene_id="a",
        gpu_before=None,
        gpu_after=None,
        policy=FAST.as_dict(),
        prompt_id=prompt_id,
        queue_start_ms=None,
        execution_started_at="2026-01-02T03:04:05.000Z",
        started_monotonic=None,
        comfyui_version="0.8.0",
    )
    write_run(done.marker_path.parent, build_run_metadata([graph], run_id=prompt_id, writer="graph"))
    with FakeComfy(Scenario()) as fake:
        runner = _runner(fake, tmp_path)
        marker = MarkerOutcome(detected=True, body=done.body, folder=done.marker_path.parent)
        runner_fields = {"HistoryExitReason": "success", "SceneAttempts": 1, "DoneMarkerDetected": True}
        doc = scene_document(runner.client, runner.options, "a", prompt_id, None, marker, None, runner_fields)
    validate_document(doc, "scene-telemetry")
    assert doc["Writer"] == "runner" and doc["SceneAttempts"] == 1 and doc["DoneMarkerDetected"] is True
    assert doc["ExecutionStartedAt"] == "2026-01-02T03:04:05.000Z"  # the graph's own observation is kept
    assert doc["Versions"]["ComfyUI"] == "0.8.0" and doc["Frames"] == graph["Frames"]
    assert doc["PollLimit"] == "unbounded" and doc["SceneRetryBudget"] == FAST.scene_retry_budget


def test_remote_copies_go_to_the_scene_folder_whatever_scene_id_the_mapping_routes(
    tmp_path: Path, output_dir: Path
) -> None:
    # The marker's SceneId is whatever the mapping routed into WriteDoneMarker's scene_id; it used to name the
    # copy folder, so "../escaped" wrote outside the run folder. Copies belong in RUN_DIR/<scene id>.
    mapping = parse_mapping({"seed": "id:2.seed", "scene_id": "id:3.scene_id"})
    with FakeComfy(Scenario(), output_dir=output_dir) as fake:
        runner = _runner(fake, tmp_path, local=False)
        runner.mapping = mapping
        result = runner.run([Scene("a", {"seed": 0, "scene_id": "../escaped"})])
    assert result.scenes[0].document["DoneMarkerDetected"] is True
    assert read_marker(tmp_path / "run" / "a" / "frame.done")["SceneId"] == "../escaped"
    assert not (tmp_path / "escaped").exists()


def test_remote_marker_wait_cuts_a_stalled_view_at_the_window(tmp_path: Path) -> None:
    # A server that accepts connections and never answers: each /view used to wait the full request timeout.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        options = RunOptions(server=url, run_dir=tmp_path / "run", policy=FAST, run_id="run1", gpu_snapshots=False)
        markers = MarkerCollector(ComfyClient(url, request_timeout_s=5.0), options)
        started = time.monotonic()
        outcome = markers.wait_remote("a", "pid", "run1/a", "frame.done", Deadline.after(0.3))
        elapsed = time.monotonic() - started
    assert not outcome.detected and outcome.problem
    assert elapsed < 0.3 + 1.0


def test_a_scene_given_up_on_is_stopped_so_the_next_one_does_not_queue_behind_it(
    tmp_path: Path, output_dir: Path
) -> None:
    # The first prompt would run for a minute; after maxWait it used to keep the server busy, and every
    # following scene waited behind it into its own maxWait.
    policy = QueuePolicy(1.0, 0.05, 0, 0.5, scene_retry_budget=0)
    with FakeComfy([Scenario(run_seconds=60), Scenario()], output_dir=output_dir) as fake:
        started = time.monotonic()
        result = _runner(fake, tmp_path, policy=policy).run(_scenes("a", "b"))
        elapsed = time.monotonic() - started
    assert [s.exit_reason for s in result.scenes] == ["maxWait", "success"]
    assert ("POST", "/interrupt") in fake.requests and ("POST", "/queue") in fake.requests
    assert elapsed < 2 * policy.max_wait_seconds + 3.0


def test_cli_resume_of_another_runs_folder_is_a_usage_error(
    tmp_path: Path, output_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / STATE_FILE).write_text(json.dumps({"RunId": "other", "Scenes": {}}))
    with FakeComfy(Scenario(), output_dir=output_dir) as fake:
        argv = ["run", *_write_inputs(tmp_path, {"seed": "id:2.seed"}), "--server", fake.url, "--no-gpu"]
        code = main([*argv, "--out", str(tmp_path / "run"), "--resume", "--run-id", "mine"])
    assert code == 2 and fake.submissions == []
    assert "cannot resume: state belongs to run 'other'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("state", "says"),
    [
        ([1, 2], "not a JSON object"),
        ({"RunId": "mine", "Scenes": [1]}, "'Scenes' is not an object"),
        ({"RunId": "mine", "Scenes": {"a": [1]}}, "scene 'a' is not an object"),
        ({"RunId": "mine", "Scenes": {"a": {"PromptIds": "p1"}}}, "scene 'a' PromptIds is not a list of strings"),
        ({"RunId": "mine", "Scenes": {"a": {"PromptIds": [], "SubmittedAt": []}}}, "SubmittedAt is not an object"),
    ],
    ids=["list", "scenes-list", "scene-list", "prompt-ids-string", "submitted-at-list"],
)
def test_cli_resume_of_a_malformed_state_is_one_line_usage_error(
    tmp_path: Path, output_dir: Path, capsys: pytest.CaptureFixture[str], state: Any, says: str
) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / STATE_FILE).write_text(json.dumps(state))
    with FakeComfy(Scenario(), output_dir=output_dir) as fake:
        argv = ["run", *_write_inputs(tmp_path, {"seed": "id:2.seed"}), "--server", fake.url, "--no-gpu"]
        code = main([*argv, "--out", str(tmp_path / "run"), "--resume", "--run-id", "mine"])
    err = capsys.readouterr().err
    assert code == 2 and fake.submissions == []
    assert "cannot resume: runner state is unreadable" in err and says in err and "Traceback" not in err, err


BUDGET_SLACK_S = 0.5
"""What a scene may take past its budget: one MIN_REQUEST_TIMEOUT_S request, stopping an abandoned prompt
on a healthy fake, loop and thread scheduling on a shared 2-core machine."""


def test_a_stalled_post_prompt_ends_the_attempt_within_max_wait(tmp_path: Path, output_dir: Path) -> None:
    # POST /prompt never answers: SUBMIT_TRIES requests of the full 2 s request timeout (plus look-ups) used to
    # run before the attempt's budget even started, ~6 s for a 1 s max_wait. Now they share the attempt deadline.
    policy = QueuePolicy(1.0, 0.05, 0, 0.3, scene_retry_budget=0)
    with FakeComfy(Scenario(), output_dir=output_dir, stall_s={"POST /prompt": 30.0}) as fake:
        started = time.monotonic()
        result = _runner(fake, tmp_path, policy=policy).run(_scenes("a"))
        elapsed = time.monotonic() - started
    doc = result.scenes[0].document
    assert doc["HistoryExitReason"] == "maxWait" and "POST /prompt did not complete" in doc["ExitDetail"]
    assert doc["DurationSeconds"] < policy.max_wait_seconds + BUDGET_SLACK_S
    assert elapsed < policy.max_wait_seconds + BUDGET_SLACK_S + 1.0  # + writing and validating the run folder


def test_the_lost_prompt_check_ends_at_the_attempt_deadline(tmp_path: Path, output_dir: Path) -> None:
    # After a restart the runner looks the prompt up (history, queue, history). Those requests were timed from
    # before the poll, so a stalled /queue ran up to a whole extra window past the deadline.
    policy = QueuePolicy(2.0, 0.05, 0, 0.3, scene_retry_budget=0)
    stalls = {"GET /queue": 30.0, "GET /history/": 0.5}
    with FakeComfy(Scenario(restart_after=2, down_s=0.1), output_dir=output_dir, stall_s=stalls) as fake:
        runner = _runner(fake, tmp_path, policy=policy)
        runner.client = ComfyClient(fake.url, request_timeout_s=5.0)
        result = runner.run(_scenes("a"))
    doc = result.scenes[0].document
    assert doc["HistoryExitReason"] == "maxWait"
    assert fake.restarts == 1 and any(r == ("GET", "/queue") for r in fake.requests)  # the check did run
    assert doc["DurationSeconds"] < policy.max_wait_seconds + BUDGET_SLACK_S


def test_gpu_snapshots_of_a_wedged_server_stay_within_their_allowance(tmp_path: Path, output_dir: Path) -> None:
    # /system_stats never answers: each snapshot used to take 3 tries x 5 s (+ up to 10 s of nvidia-smi) outside
    # any budget. Now each is one short try inside a fixed allowance, and the failure is a FallbackNotes line.
    allowance = 0.3
    with FakeComfy(Scenario(), output_dir=output_dir, stall_s={"GET /system_stats": 30.0}) as fake:
        runner = _runner(fake, tmp_path, gpu_snapshots=True, gpu_snapshot_allowance_s=allowance)
        started = time.monotonic()
        outcome = runner.run_scene(_scenes("a")[0])
        elapsed = time.monotonic() - started
    doc = outcome.document
    assert outcome.ok and doc["HistoryExitReason"] == "success"
    assert ("GET", "/system_stats") in fake.requests  # both snapshots asked the server, once each
    assert fake.requests.count(("GET", "/system_stats")) == 2
    assert any(note.startswith("system_stats: no reply within") for note in doc["System"]["FallbackNotes"])
    # the scene itself takes well under a second here; the snapshots may add 2 x allowance
    assert elapsed < 2 * allowance + 1.0 + BUDGET_SLACK_S


def test_cli_unwritable_out_is_one_line_and_exit_2_before_preflight(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --out below a regular file used to pass preflight and die in Runner.run with a traceback (exit 1).
    (tmp_path / "file").write_text("x")
    with FakeComfy(Scenario()) as fake:
        argv = ["run", *_write_inputs(tmp_path, {"seed": "id:2.seed"}), "--server", fake.url, "--no-gpu"]
        code = main([*argv, "--out", str(tmp_path / "file" / "run")])
    err = capsys.readouterr().err
    assert code == 2 and fake.requests == [] and fake.submissions == []  # not even /system_stats
    out, parent = tmp_path / "file" / "run", tmp_path / "file"
    assert err.strip() == f"scene-telemetry: error: --out {out}: {parent} is not a folder"


def test_retries_multiply_a_scene_up_to_its_stated_worst_case(tmp_path: Path, output_dir: Path) -> None:
    # Each attempt fails and its history entry never comes: it waits out the post-execution window, then is
    # retried. The scene takes (1 + retry budget) windows, and stays within scene_worst_case_s.
    policy = QueuePolicy(2.0, 0.05, 0, 0.3, scene_retry_budget=1)
    with FakeComfy(Scenario(case="error", history_never=True), output_dir=output_dir) as fake:
        runner = _runner(fake, tmp_path, policy=policy)
        started = time.monotonic()
        outcome = runner.run_scene(_scenes("a")[0])
        elapsed = time.monotonic() - started
    assert outcome.exit_reason == "executionError" and outcome.document["SceneAttempts"] == 2
    assert 2 * policy.post_execution_timeout_seconds <= elapsed < scene_worst_case_s(runner.options) + BUDGET_SLACK_S
