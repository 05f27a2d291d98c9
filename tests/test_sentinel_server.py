"""Sentinel, server mode: parsing recorded history, following the fake ComfyUI, catch-up and restarts."""

from __future__ import annotations

import copy
import json
import random
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import FakeComfy, Scenario, fake_servers, load_transcript
from scene_telemetry.cli.main import main as cli_main
from scene_telemetry.comfy_api.client import ComfyClient
from scene_telemetry.sentinel import GroupKey, Journal, ServerSentinel, from_history, from_job, node_batches
from scene_telemetry.telemetry import verify_marker
from sentinel_helpers import fail_first_marker_write, reaped, running, start_sentinel, stop_timed, wait_until


@pytest.fixture
def fake_comfy() -> Iterator[Any]:
    with fake_servers() as start:
        yield start


def recorded_prompt(case: str) -> Any:
    data = load_transcript(case)
    prompt_id = data["prompt_reply"]["prompt_id"]
    return from_history(prompt_id, data["history"][prompt_id])


def save_image_graph(prefix: str, frames: int = 3, seed: int = 0) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": frames, "color": seed}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def marker_node_graph(prefix: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 0}},
        "3": {
            "class_type": "SceneTelemetry_WriteDoneMarker",
            "inputs": {"images": ["1", 0], "filename_prefix": prefix, "scene_id": ""},
        },
    }


def submit(fake: FakeComfy, graph: dict[str, Any]) -> str:
    prompt_id = str(uuid.uuid4())
    ComfyClient(fake.url).submit(graph, prompt_id=prompt_id)
    wait_until(lambda: fake.history_entry(prompt_id) is not None)
    return prompt_id


def sentinel(fake: FakeComfy, out: Path, **kwargs: Any) -> ServerSentinel:
    return ServerSentinel(fake.url, out, Journal.load(out / ".scene-telemetry-sentinel.json"), **kwargs)


# ---------------------------------------------------------------------------------------------- parsing


def test_recorded_saveimage_history_is_one_batch() -> None:
    batches, skipped = node_batches(recorded_prompt("success"))
    assert skipped == []
    [batch] = batches
    assert (batch.node_id, batch.class_type, batch.key) == ("2", "SaveImage", GroupKey("rec", "success"))
    assert [name for name, _ in batch.files] == [f"success_{i:05}_.png" for i in range(9, 17)]
    assert [counter for _, counter in batch.files] == list(range(9, 17))


def test_recorded_saveanimatedwebp_history_is_one_batch_per_output_node() -> None:
    batches, _ = node_batches(recorded_prompt("success_webp"))
    by_key = {b.key: b for b in batches}
    assert set(by_key) == {GroupKey("rec", "webp"), GroupKey("rec", "webp_anim")}
    assert by_key[GroupKey("rec", "webp_anim")].files == (("webp_anim_00002_.webp", 2),)
    assert by_key[GroupKey("rec", "webp_anim")].class_type == "SaveAnimatedWEBP"
    assert len(by_key[GroupKey("rec", "webp")].files) == 12


def test_recorded_cached_rerun_and_failures_give_nothing_to_mark() -> None:
    batches, skipped = node_batches(recorded_prompt("cached"))
    assert batches == [] and skipped == ["node 2 (SaveImage) was cached: no new files"]
    for case in ("error", "interrupted"):
        prompt = recorded_prompt(case)
        assert prompt.status == "failed" and node_batches(prompt) == ([], [])


def test_temp_previews_our_own_marker_node_and_escaping_paths_are_skipped() -> None:
    data = load_transcript("success")
    prompt_id = data["prompt_reply"]["prompt_id"]
    entry = copy.deepcopy(data["history"][prompt_id])
    graph = entry["prompt"][2]
    graph["5"] = {"class_type": "PreviewImage", "inputs": {}}
    graph["6"] = {"class_type": "SceneTelemetry_WriteDoneMarker", "inputs": {}}
    graph["7"] = {"class_type": "SaveImage", "inputs": {}}
    entry["outputs"]["5"] = {"images": [{"filename": "ComfyUI_temp_abcd_00001_.png", "subfolder": "", "type": "temp"}]}
    entry["outputs"]["6"] = {"images": [{"filename": "mine_00001_.png", "subfolder": "s", "type": "output"}]}
    entry["outputs"]["7"] = {"images": [{"filename": "x_00001_.png", "subfolder": "../up", "type": "output"}]}
    batches, skipped = node_batches(from_history(prompt_id, entry))
    assert [b.node_id for b in batches] == ["2"]
    assert skipped == [
        "node 6 (SceneTelemetry_WriteDoneMarker) writes its own marker",
        "node 7: ../up/x_00001_.png is outside the output directory",
    ]


def test_video_combine_gifs_and_videos_are_batches() -> None:
    """Video Combine's ``gifs`` items carry format/frame_rate/workflow/fullpath besides the file (VHS's ui)."""
    graph = {"9": {"class_type": "VHS_VideoCombine", "inputs": {}}, "8": {"class_type": "SaveVideo", "inputs": {}}}
    outputs = {
        "9": {
            "gifs": [
                {
                    "filename": "clip_00001.mp4",
                    "subfolder": "vids",
                    "type": "output",
                    "format": "video/h264-mp4",
                    "frame_rate": 8.0,
                    "workflow": "clip_00001.png",
                    "fullpath": "/opt/ComfyUI/output/vids/clip_00001.mp4",
                }
            ]
        },
        "8": {"images": [{"filename": "v_00001_.mp4", "subfolder": "", "type": "output"}], "animated": [True]},
    }
    job = {"id": "p", "status": "completed", "workflow": {"prompt": graph}, "outputs": outputs}
    batches, _ = node_batches(from_job(job))
    assert {(b.key, b.files) for b in batches} == {
        (GroupKey("vids", "clip"), (("clip_00001.mp4", 1),)),
        (GroupKey("", "v"), (("v_00001_.mp4", 1),)),
    }


# ---------------------------------------------------------------------------------------------- live


def test_a_finished_saveimage_prompt_gets_one_marker_with_its_ids(fake_comfy: Any, output_dir: Path) -> None:
    fake = fake_comfy(Scenario(write_marker=False), output_dir=output_dir)
    service = sentinel(fake, output_dir)
    with running(service):
        assert service.ready.wait(10)
        prompt_id = submit(fake, save_image_graph("shots/a/frame"))
        marker = output_dir / "shots" / "a" / "frame.done"
        wait_until(marker.exists)
        body = verify_marker(marker)
        history = fake.history_entry(prompt_id)
        assert history is not None
        listed = [i["filename"] for i in history["outputs"]["2"]["images"]]
        assert [f["Name"] for f in body["Files"]] == listed
        assert (body["Source"], body["PromptId"], body["NodeId"]) == ("sentinel", prompt_id, "2")
        assert body["Parameters"]["NodeClass"] == "SaveImage"
        assert body["Versions"]["ComfyUI"] == "0.8.0"
        assert (body["FilenamePrefix"], body["Subfolder"]) == ("shots/a/frame", "shots/a")
        second = submit(fake, save_image_graph("shots/a/frame", frames=2, seed=1))
        wait_until(lambda: verify_marker(marker)["PromptId"] == second)
        assert [f["Name"] for f in verify_marker(marker)["Files"]] == ["frame_00004_.png", "frame_00005_.png"]
        assert cli_main(["wait", str(marker), "--prompt-id", second, "--timeout", "1"]) == 0
    assert service.markers_written == 2
    assert any(path.startswith("/api/jobs?status=completed") for _, path in fake.requests)
    assert any(path.startswith("/ws?clientId=scene-telemetry-sentinel") for _, path in fake.requests)


def test_a_graph_with_write_done_marker_gets_no_sentinel_marker(fake_comfy: Any, output_dir: Path) -> None:
    fake = fake_comfy(Scenario(write_marker=True), output_dir=output_dir)
    service = sentinel(fake, output_dir)
    with running(service):
        assert service.ready.wait(10)
        prompt_id = submit(fake, marker_node_graph("node/frame"))
        wait_until(lambda: prompt_id in service.journal.prompts)
    marker = output_dir / "node" / "frame.done"
    assert verify_marker(marker)["Source"] == "node"
    assert service.markers_written == 0 and service.journal.prompts[prompt_id] == "nothing"


def test_failed_prompt_is_recorded_not_marked(fake_comfy: Any, output_dir: Path) -> None:
    fake = fake_comfy(Scenario(case="error"), output_dir=output_dir)
    prompt_id = submit(fake, save_image_graph("bad/frame"))
    assert sentinel(fake, output_dir).run(once=True) == 0
    journal = Journal.load(output_dir / ".scene-telemetry-sentinel.json")
    assert journal.prompts[prompt_id] == "failed"
    assert list(output_dir.rglob("*.done")) == []


@pytest.mark.parametrize("jobs_api", [True, False], ids=["api-jobs", "history-fallback"])
def test_catch_up_at_start_and_a_restart_repeats_nothing(fake_comfy: Any, output_dir: Path, jobs_api: bool) -> None:
    fake = fake_comfy(Scenario(write_marker=False), output_dir=output_dir, jobs_api=jobs_api)
    ids = [submit(fake, save_image_graph(f"down/s{i}/frame", seed=i)) for i in range(3)]
    time.sleep(0.3)
    assert sentinel(fake, output_dir).run(once=True) == 3
    markers = sorted(output_dir.rglob("*.done"))
    assert [verify_marker(m)["PromptId"] for m in markers] == ids
    inodes = [m.stat().st_ino for m in markers]
    service = sentinel(fake, output_dir)
    with running(service):
        assert service.ready.wait(10)
        time.sleep(0.5)
    assert service.markers_written == 0
    assert [m.stat().st_ino for m in sorted(output_dir.rglob("*.done"))] == inodes
    history_reads = [p for _, p in fake.requests if p.startswith("/history?max_items=")]
    assert bool(history_reads) is not jobs_api


def test_journal_lost_after_marking_writes_no_second_marker(fake_comfy: Any, output_dir: Path) -> None:
    fake = fake_comfy(Scenario(write_marker=False), output_dir=output_dir)
    submit(fake, save_image_graph("lost/frame"))
    time.sleep(0.3)
    assert sentinel(fake, output_dir).run(once=True) == 1
    (output_dir / ".scene-telemetry-sentinel.json").unlink()  # killed between the marker and the journal
    inode = (output_dir / "lost" / "frame.done").stat().st_ino
    assert sentinel(fake, output_dir).run(once=True) == 0
    assert (output_dir / "lost" / "frame.done").stat().st_ino == inode
    state = json.loads((output_dir / ".scene-telemetry-sentinel.json").read_text("utf-8"))
    assert [outcome for _, outcome in state["Prompts"]] == ["already"]


def test_server_down_at_start_is_waited_out(fake_comfy: Any, output_dir: Path) -> None:
    fake = fake_comfy(Scenario(write_marker=False), output_dir=output_dir)
    submit(fake, save_image_graph("late/frame"))
    fake.go_down(lose_state=False)
    service = sentinel(fake, output_dir, poll_interval_s=0.2)
    with running(service):
        time.sleep(0.5)
        assert not service.ready.is_set()
        fake.come_up()
        wait_until((output_dir / "late" / "frame.done").exists)


def test_sigterm_stops_a_sentinel_waiting_on_a_stalled_server_within_2_s(
    fake_comfy: Any, output_dir: Path, tmp_path: Path
) -> None:
    # The fake matches a stall on the path without its /api prefix ("GET /api/jobs" never stalled).
    fake = fake_comfy(Scenario(write_marker=False), output_dir=output_dir, stall_s={"GET /jobs": 30.0})
    log = tmp_path / "sentinel.log"
    with reaped(start_sentinel(output_dir, log, "--server", fake.url)) as process:
        wait_until(lambda: any(p.startswith("/api/jobs") for _, p in fake.requests), timeout=20)
        code, elapsed = stop_timed(process)
    assert code == 0, log.read_text()
    assert elapsed < 2.0, f"took {elapsed:.2f} s"
    assert "Traceback" not in log.read_text()


def test_once_against_a_dead_server_is_one_line_and_exit_1(
    output_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scene_telemetry.cli.main import main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["sentinel", "--output-dir", str(output_dir), "--server", f"http://127.0.0.1:{port}", "--once"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot list finished prompts" in err


def test_a_marker_that_cannot_be_written_is_retried(
    fake_comfy: Any, output_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scene_telemetry.sentinel import _server

    calls = fail_first_marker_write(monkeypatch)
    monkeypatch.setattr(_server, "RETRY_AFTER_ERROR_S", 0.2)
    fake = fake_comfy(Scenario(write_marker=False), output_dir=output_dir)
    service = sentinel(fake, output_dir)
    with running(service):
        assert service.ready.wait(10)
        prompt_id = submit(fake, save_image_graph("retry/frame"))
        wait_until(lambda: service.journal.prompts.get(prompt_id) == "marked")
    assert len(calls) == 2 and verify_marker(output_dir / "retry" / "frame.done")["PromptId"] == prompt_id


def test_sigkill_at_random_points_leaves_one_marker_per_prompt(
    fake_comfy: Any, output_dir: Path, tmp_path: Path
) -> None:
    """Prompts finish while the server-mode sentinel is killed (SIGKILL) and restarted at random moments."""
    rng = random.Random(99)
    fake = fake_comfy(Scenario(write_marker=False), output_dir=output_dir)
    log = tmp_path / "sentinel.log"

    def start() -> subprocess.Popen[bytes]:
        return start_sentinel(output_dir, log, "--server", fake.url)

    expected: dict[Path, str] = {}
    first_inode: dict[Path, int] = {}

    def note() -> None:
        for marker in expected:
            if marker.exists():
                assert first_inode.setdefault(marker, marker.stat().st_ino) == marker.stat().st_ino, marker

    process = start()
    try:
        for round_ in range(8):
            for b in range(rng.randint(1, 3)):
                prompt_id = submit(fake, save_image_graph(f"k{round_}/b{b}/frame", seed=round_ * 10 + b))
                expected[output_dir / f"k{round_}" / f"b{b}" / "frame.done"] = prompt_id
            time.sleep(rng.uniform(0.0, 0.8))
            note()
            process.kill()
            process.wait()
            note()
            process = start()
        wait_until(lambda: all(m.exists() for m in expected), timeout=30)
        time.sleep(1.0)
        note()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    for marker, prompt_id in expected.items():
        assert verify_marker(marker)["PromptId"] == prompt_id
    assert len(list(output_dir.rglob("*.done"))) == len(expected)
    note()
