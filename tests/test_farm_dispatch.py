"""The in-process farm (``run --server A --server B``) against fault-injecting fake ComfyUI servers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import FakeComfy, Scenario, fake_servers
from scene_telemetry.cli.main import main
from scene_telemetry.farm.dispatch import Dispatcher, SharedRunState
from scene_telemetry.farm.pace import Busy, Pace, others_can_absorb
from scene_telemetry.farm.servers import FarmServer, instance_id, load_servers_file
from scene_telemetry.runner.options import RunOptions
from scene_telemetry.runner.policy import QueuePolicy
from scene_telemetry.runner.scenes import MARKER_CLASS, Scene, parse_mapping
from scene_telemetry.telemetry import InvalidInputError, validate_run

POLICY = QueuePolicy(
    max_wait_seconds=5.0,
    history_poll_interval_seconds=0.05,
    max_attempt_count=0,
    post_execution_timeout_seconds=1.0,
    scene_retry_budget=1,
)
WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 0}},
    "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": 1, "strength": 0.5}},
    "3": {"class_type": MARKER_CLASS, "inputs": {"images": ["2", 0], "filename_prefix": "x/frame", "scene_id": ""}},
}
MAPPING = parse_mapping({"seed": "id:2.seed"})


@pytest.fixture
def start() -> Iterator[Any]:
    with fake_servers() as starter:
        yield starter


def _server(fake: FakeComfy) -> FarmServer:
    return FarmServer(fake.url, instance_id(fake.url, None), "cpu")


def _dispatch(tmp_path: Path, fakes: list[FakeComfy], scenes: list[Scene], **kw: Any) -> tuple[Dispatcher, list[Any]]:
    options = RunOptions(
        server=fakes[0].url,
        run_dir=tmp_path / "run",
        policy=kw.pop("policy", POLICY),
        run_id="farm1",
        forced_quiet_period_s=0.1,
        marker_poll_interval_s=0.05,
        gpu_snapshots=False,
        server_grace_s=0.5,
    )
    state = SharedRunState.new(options.run_dir, options.run_id)
    dispatcher = Dispatcher([_server(f) for f in fakes], WORKFLOW, MAPPING, options, state, **kw)
    return dispatcher, dispatcher.run(scenes)


def _scenes(n: int) -> list[Scene]:
    return [Scene(f"s{i:02d}", {"seed": i}) for i in range(n)]


def test_a_faster_server_takes_more_scenes_and_every_record_names_its_server(tmp_path: Path, start: Any) -> None:
    slow = start(Scenario(run_seconds=0.4), output_dir=tmp_path / "o1")
    fast = start(Scenario(run_seconds=0.05), output_dir=tmp_path / "o2")
    dispatcher, outcomes = _dispatch(tmp_path, [slow, fast], _scenes(8))
    assert [o.scene_id for o in outcomes] == [f"s{i:02d}" for i in range(8)]
    assert all(o.ok for o in outcomes)
    by_server = {s.url: s.scenes for s in dispatcher.stats}
    assert by_server[fast.url] > by_server[slow.url] >= 1
    assert len(slow.submissions) + len(fast.submissions) == 8  # each scene queued once
    for outcome in outcomes:
        doc = outcome.document
        assert doc["ServerUrl"] in (slow.url, fast.url) and doc["ServerDevice"] == "cpu"
        assert doc["ServerInstanceId"] == instance_id(doc["ServerUrl"], None)


def test_an_execution_error_is_retried_on_another_server(tmp_path: Path, start: Any) -> None:
    broken = start(Scenario(case="error"), output_dir=tmp_path / "o1")
    good = start(Scenario(run_seconds=0.3), output_dir=tmp_path / "o2")
    dispatcher, outcomes = _dispatch(tmp_path, [broken, good], _scenes(2))
    assert all(o.ok for o in outcomes), [o.document["ExitDetail"] for o in outcomes]
    for outcome in outcomes:
        assert outcome.document["ServerUrl"] == good.url
    retried = [o for o in outcomes if o.document["SceneAttempts"] == 2]
    assert retried  # the scene the broken server took failed there, then succeeded elsewhere
    ids = [b["prompt_id"] for b in broken.submissions + good.submissions]
    assert len(ids) == len(set(ids))  # every submission has its own prompt id


def test_a_server_that_dies_mid_run_hands_its_scenes_to_the_others(tmp_path: Path, start: Any) -> None:
    dying = start([Scenario(run_seconds=0.1), Scenario(restart_after=1, down_s=None)], output_dir=tmp_path / "o1")
    alive = start(Scenario(run_seconds=0.2), output_dir=tmp_path / "o2")
    started = time.monotonic()
    dispatcher, outcomes = _dispatch(tmp_path, [dying, alive], _scenes(6), quarantine_after=1, probe_interval_s=60)
    assert time.monotonic() - started < 20
    assert all(o.ok for o in outcomes), [o.document["ExitDetail"] for o in outcomes]
    stats = {s.url: s for s in dispatcher.stats}
    assert stats[dying.url].quarantines == 1 and stats[dying.url].failures == 1
    moved = [o for o in outcomes if o.document["SceneAttempts"] == 2]
    assert len(moved) == 1 and moved[0].document["ServerUrl"] == alive.url


def test_when_no_server_is_usable_the_run_ends_cleanly(tmp_path: Path, start: Any) -> None:
    a = start(Scenario(case="error"), output_dir=tmp_path / "o1")
    b = start(Scenario(case="error"), output_dir=tmp_path / "o2")
    started = time.monotonic()
    dispatcher, outcomes = _dispatch(tmp_path, [a, b], _scenes(6), quarantine_after=2, probe_interval_s=60)
    assert time.monotonic() - started < 20
    assert not any(o.ok for o in outcomes) and len(outcomes) == 6
    assert all(s.quarantines == 1 for s in dispatcher.stats)
    reasons = {o.document["HistoryExitReason"] for o in outcomes}
    assert reasons <= {"executionError", "serverLost"}
    unrun = [o for o in outcomes if o.document["HistoryExitReason"] == "serverLost"]
    assert unrun and all("no usable server" in o.document["ExitDetail"] for o in unrun)
    assert len(a.submissions) + len(b.submissions) == 4  # 2 failures each, then nothing more was queued


def test_a_quarantined_server_is_probed_and_takes_scenes_again(tmp_path: Path, start: Any) -> None:
    flaky = start([Scenario(case="error"), Scenario(run_seconds=0.05)], output_dir=tmp_path / "o1")
    steady = start(Scenario(run_seconds=0.5), output_dir=tmp_path / "o2")
    dispatcher, outcomes = _dispatch(tmp_path, [flaky, steady], _scenes(8), quarantine_after=1, probe_interval_s=0.3)
    assert all(o.ok for o in outcomes)
    stats = {s.url: s for s in dispatcher.stats}
    assert stats[flaky.url].quarantines == 1 and stats[flaky.url].scenes >= 3


def _cli_files(tmp_path: Path) -> None:
    (tmp_path / "wf.json").write_text(json.dumps(WORKFLOW))
    (tmp_path / "scenes.json").write_text(json.dumps([{"id": f"s{i}", "seed": i} for i in range(4)]))
    (tmp_path / "mapping.json").write_text(json.dumps({"seed": "id:2.seed"}))


def _cli_args(tmp_path: Path, urls: list[str]) -> list[str]:
    args = ["run", str(tmp_path / "wf.json"), "--scenes", str(tmp_path / "scenes.json")]
    args += ["--mapping", str(tmp_path / "mapping.json"), "--out", str(tmp_path / "run"), "--run-id", "r1"]
    args += ["--max-wait-seconds", "5", "--history-poll-interval-seconds", "0.05"]
    args += ["--post-execution-timeout-seconds", "1", "--no-gpu", "--json"]
    for url in urls:
        args += ["--server", url]
    return args


def _cli(tmp_path: Path, urls: list[str], *extra: str) -> int:
    _cli_files(tmp_path)
    return main([*_cli_args(tmp_path, urls), *extra])


def test_run_with_several_servers_leaves_out_one_without_the_node_class(
    tmp_path: Path, start: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    a = start(Scenario(run_seconds=0.05), output_dir=tmp_path / "o1")
    lacking = start(Scenario(), output_dir=tmp_path / "o2", missing_classes=("ImageAddNoise",))
    b = start(Scenario(run_seconds=0.05), output_dir=tmp_path / "o3")
    assert _cli(tmp_path, [a.url, lacking.url, b.url]) == 0
    out = capsys.readouterr()
    assert f"server {lacking.url} left out" in out.out + out.err and "ImageAddNoise" in out.out + out.err
    assert lacking.submissions == []
    result = json.loads(out.out.strip().splitlines()[-1])
    assert result["ok"] and result["validation_ok"] and len(result["servers"]) == 3
    assert validate_run(tmp_path / "run").ok
    summary = (tmp_path / "run" / "run-summary.txt").read_text()
    lines = [line for line in summary.splitlines() if line.startswith("# server ")]
    assert len(lines) == 3 and sum("left out: " in line for line in lines) == 1
    assert all(" 0 failure(s)" in line for line in lines if "left out" not in line)
    servers = {s["url"]: s for s in result["servers"]}
    assert servers[lacking.url]["left_out"] and servers[a.url]["scenes"] + servers[b.url]["scenes"] == 4


def test_resume_across_the_farm_keeps_finished_scenes(tmp_path: Path, start: Any) -> None:
    a = start([Scenario(case="error")], output_dir=tmp_path / "o1")
    assert _cli(tmp_path, [a.url], "--scene-retry-budget", "0") == 20
    b = start(Scenario(run_seconds=0.05), output_dir=tmp_path / "o2")
    c = start(Scenario(run_seconds=0.05), output_dir=tmp_path / "o3")
    assert _cli(tmp_path, [b.url, c.url], "--resume") == 0
    metadata = json.loads((tmp_path / "run" / "artifact-metadata.json").read_text())
    assert {d["ServerUrl"] for d in metadata["Scenes"]} <= {b.url, c.url}
    assert all(d["SceneAttempts"] == 2 for d in metadata["Scenes"])  # attempt 1 failed on a: new ids here


def test_servers_file_bad_line_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "servers.txt"
    path.write_text("# farm\nhttp://10.0.0.1:8188\nftp://nope\n")
    with pytest.raises(InvalidInputError, match="line 3"):
        load_servers_file(path)
    path.write_text("http://10.0.0.1:8188  # gpu0\n\nhttp://10.0.0.2:8188\n")
    assert load_servers_file(path) == ["http://10.0.0.1:8188", "http://10.0.0.2:8188"]


def test_a_slow_server_leaves_the_last_scenes_to_faster_ones() -> None:
    now = 100.0
    fast_idle = Busy(0.5, (), 1)
    assert others_can_absorb(2, now + 2.0, now, [fast_idle])  # 4 scenes fit before the slow one would end
    assert not others_can_absorb(5, now + 2.0, now, [fast_idle])
    assert not others_can_absorb(1, now + 2.0, now, [Busy(None, (), 1)])  # no pace yet: never counted on
    fast_busy = Busy(0.5, (now - 0.4,), 1)  # free in 0.1 s: 3 more by now + 2
    assert others_can_absorb(3, now + 2.0, now, [fast_busy]) and not others_can_absorb(4, now + 2.0, now, [fast_busy])
    pace = Pace()
    pace.observe(1.0)
    pace.observe(2.0)
    assert pace.seconds == pytest.approx(1.3)


def test_a_farm_run_killed_mid_scene_resumes_and_runs_no_scene_twice(tmp_path: Path, start: Any) -> None:
    """The in-process twin of a worker killed mid-scene: SIGKILL the run, then --resume re-attaches."""
    a = start(Scenario(run_seconds=1.5), output_dir=tmp_path / "o1")
    b = start(Scenario(run_seconds=1.5), output_dir=tmp_path / "o2")
    _cli_files(tmp_path)
    args = [sys.executable, "-m", "scene_telemetry.cli", *_cli_args(tmp_path, [a.url, b.url])]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (a.submissions and b.submissions) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert a.submissions and b.submissions, "the run never reached both servers"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    in_flight = {body["prompt_id"] for body in a.submissions + b.submissions}
    assert main(_cli_args(tmp_path, [a.url, b.url]) + ["--resume"]) == 0
    bodies = a.submissions + b.submissions
    assert len(bodies) == 4 and len({body["prompt_id"] for body in bodies}) == 4  # nothing queued twice
    metadata = json.loads((tmp_path / "run" / "artifact-metadata.json").read_text())
    assert sorted(d["SceneId"] for d in metadata["Scenes"]) == ["s0", "s1", "s2", "s3"]
    assert in_flight <= {d["PromptId"] for d in metadata["Scenes"]}  # the killed scenes were re-attached
    assert validate_run(tmp_path / "run").ok


def test_per_server_slots_keep_that_many_scenes_in_flight_on_one_server(tmp_path: Path, start: Any) -> None:
    fake = start(Scenario(run_seconds=0.3), output_dir=tmp_path / "o1")
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            in_flight = len(fake._running) + len(fake._pending)
            peak = max(peak, in_flight)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        dispatcher, outcomes = _dispatch(tmp_path, [fake], _scenes(4), per_server=2)
    finally:
        stop.set()
        watcher.join()
    assert all(o.ok for o in outcomes) and dispatcher.stats[0].scenes == 4
    assert peak == 2  # two slots: the server always had the next scene queued, never more
    assert len({body["client_id"] for body in fake.submissions}) == 2  # one websocket client per slot


def test_the_terminal_lines_name_each_scenes_server_and_end_with_one_line_per_server(
    tmp_path: Path, start: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    a = start(Scenario(run_seconds=0.05), output_dir=tmp_path / "o1")
    b = start(Scenario(run_seconds=0.05), output_dir=tmp_path / "o2")
    _cli_files(tmp_path)
    args = [arg for arg in _cli_args(tmp_path, [a.url, b.url]) if arg != "--json"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    ends = [line for line in err.splitlines() if ": success on " in line]
    assert len(ends) == 4 and all(line.endswith((a.url, b.url)) for line in ends)
    lines = [line for line in out.splitlines() if line.startswith("server srv-")]
    assert len(lines) == 2 and all("0 failure(s)" in line and " s busy" in line for line in lines)
