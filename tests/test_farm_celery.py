"""The Celery farm with real parts: a real redis-server, real ``farm worker`` processes in front of
fault-injecting fake ComfyUI servers (tests/fake_comfy.py), and ``farm submit`` as users run it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import FakeComfy, Scenario, fake_servers
from redis_server import RedisServer, redis_server, start_redis  # noqa: F401 - the fixture
from scene_telemetry.cli.main import main
from scene_telemetry.farm.redact import redact_url
from scene_telemetry.farm.servers import FarmServer
from scene_telemetry.farm.shared_pace import KEY, SharedPace
from scene_telemetry.farm.tasks import WorkerConfig, run_dir_of
from scene_telemetry.runner.scenes import MARKER_CLASS
from scene_telemetry.telemetry import validate_run

WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 0}},
    "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": 1, "strength": 0.5}},
    "3": {"class_type": MARKER_CLASS, "inputs": {"images": ["2", 0], "filename_prefix": "x/frame", "scene_id": ""}},
}
VISIBILITY_S = 8.0
"""Short, so that a scene held by a SIGKILLed worker comes back within the test (scenes here take ~1 s)."""


class Workers:
    """``farm worker`` subprocesses (own process groups), all stopped at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, broker: str, server: str, name: str, *extra: str) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("wb")
        args = [sys.executable, "-m", "scene_telemetry.cli", "farm", "worker", "--broker", broker, "--server", server]
        args += extra
        args += ["--visibility-timeout-seconds", str(VISIBILITY_S), "--server-grace-seconds", "1"]
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.folder.glob("*.log")))

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    folder = tmp_path / "workers"
    folder.mkdir()
    group = Workers(folder)
    yield group
    group.stop_all()


@pytest.fixture
def start() -> Iterator[Any]:
    with fake_servers() as starter:
        yield starter


def _inputs(tmp_path: Path, count: int) -> list[str]:
    (tmp_path / "wf.json").write_text(json.dumps(WORKFLOW))
    (tmp_path / "scenes.json").write_text(json.dumps([{"id": f"s{i}", "seed": i} for i in range(count)]))
    (tmp_path / "mapping.json").write_text(json.dumps({"seed": "id:2.seed"}))
    return [
        str(tmp_path / "wf.json"),
        "--scenes",
        str(tmp_path / "scenes.json"),
        "--mapping",
        str(tmp_path / "mapping.json"),
    ]


def _submit_args(tmp_path: Path, broker: str, count: int, *extra: str) -> list[str]:
    args = ["farm", "submit", *_inputs(tmp_path, count), "--broker", broker, "--out", str(tmp_path / "run")]
    args += ["--run-id", "farm-run", "--max-wait-seconds", "4", "--history-poll-interval-seconds", "0.1"]
    args += ["--post-execution-timeout-seconds", "1", "--no-gpu", "--json", *extra]
    return args


def _submit(
    tmp_path: Path, broker: str, count: int, *extra: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "scene_telemetry.cli", *_submit_args(tmp_path, broker, count, *extra)]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def _result(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _records(run: Path) -> list[Path]:
    return sorted((run / ".farm" / "scenes").glob("*.json"))


def _assert_no_secret(tmp_path: Path, redis: RedisServer, *texts: str) -> None:
    assert redis.password
    for text in texts:
        assert redis.password not in text
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert redis.password.encode() not in path.read_bytes(), path


def farm_status(broker: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``scene-telemetry farm status --json`` as a user runs it: the process and its parsed report."""
    status = subprocess.run(
        [sys.executable, "-m", "scene_telemetry.cli", "farm", "status", "--broker", broker, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    report: dict[str, Any] = json.loads(status.stdout)
    return status, report


def test_scenes_run_on_every_worker_and_the_run_validates(
    tmp_path: Path,
    start: Any,
    workers: Workers,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    a = start(Scenario(run_seconds=0.3), output_dir=tmp_path / "o1")
    b = start(Scenario(run_seconds=0.3), output_dir=tmp_path / "o2")
    port = _free_port()
    workers.start(redis_server.url, a.url, "a", "--metrics-port", str(port))
    workers.start(redis_server.url, b.url, "b")
    proc = _submit(tmp_path, redis_server.url, 6)
    assert proc.returncode == 0, proc.stderr + workers.logs()
    result = _result(proc)
    assert result["ok"] and result["validation_ok"]
    assert {s["server"] for s in result["scenes"]} == {a.url, b.url}
    assert sum(s["scenes"] for s in result["servers"]) == 6
    assert len(a.submissions) + len(b.submissions) == 6
    assert validate_run(tmp_path / "run").ok
    summary = (tmp_path / "run" / "run-summary.txt").read_text()
    servers = [line for line in summary.splitlines() if line.startswith("# server ")]
    assert len(servers) == 2 and all(f" {fake.url} " in "".join(servers) for fake in (a, b))
    _assert_no_secret(tmp_path, redis_server, proc.stdout, proc.stderr, workers.logs())
    assert "longer than this worker's visibility timeout (8 s)" in workers.logs()  # the test's short timeout
    status, report = farm_status(redis_server.url)
    assert report["queued"] == [] and len(report["workers"]) == 2
    assert sum(w["finished"] for w in report["workers"]) >= 6 and all(w["running"] == [] for w in report["workers"])
    assert redis_server.password not in status.stdout + status.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        metrics = reply.read().decode()
    ran_on_a = sum(1 for s in result["scenes"] if s["server"] == a.url)
    assert f'scene_telemetry_scenes_total{{exit_reason="success"}} {float(ran_on_a)}' in metrics


def test_a_worker_killed_mid_scene_loses_no_scene_and_runs_none_twice(
    tmp_path: Path,
    start: Any,
    workers: Workers,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    a = start(Scenario(run_seconds=1.5), output_dir=tmp_path / "o1")
    b = start(Scenario(run_seconds=0.2), output_dir=tmp_path / "o2")
    victim = workers.start(redis_server.url, a.url, "a")
    workers.start(redis_server.url, b.url, "b")
    args = [sys.executable, "-m", "scene_telemetry.cli", *_submit_args(tmp_path, redis_server.url, 5)]
    submit = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not a.submissions and time.monotonic() < deadline:
            time.sleep(0.05)
        assert a.submissions, "worker a never took a scene"
        workers.kill(victim)  # SIGKILL to the whole worker (main process and its pool process) mid-scene
        killed_at = time.monotonic()
        out, err = submit.communicate(timeout=120)
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.communicate()
    assert submit.returncode == 0, err + workers.logs()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["ok"] and result["validation_ok"]
    assert time.monotonic() - killed_at < VISIBILITY_S + 30
    records = _records(tmp_path / "run")
    assert [p.stem for p in records] == [f"s{i}" for i in range(5)]  # one record per scene, none twice
    metadata = json.loads((tmp_path / "run" / "artifact-metadata.json").read_text())
    assert sorted(d["SceneId"] for d in metadata["Scenes"]) == [f"s{i}" for i in range(5)]
    lost = json.loads((tmp_path / "run" / ".farm" / "scenes" / f"{_scene_of(a)}.json").read_text())
    assert lost["Document"]["ServerUrl"] == b.url and lost["Document"]["HistoryExitReason"] == "success"
    assert validate_run(tmp_path / "run").ok


def _scene_of(fake: FakeComfy) -> str:
    prompt = fake.submissions[0]["prompt"]
    return str(prompt["3"]["inputs"]["scene_id"])


def test_a_server_that_dies_mid_run_hands_its_scenes_to_the_others(
    tmp_path: Path,
    start: Any,
    workers: Workers,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    dying = start([Scenario(run_seconds=0.3), Scenario(restart_after=1, down_s=None)], output_dir=tmp_path / "o1")
    alive = start(Scenario(run_seconds=0.3), output_dir=tmp_path / "o2")
    workers.start(redis_server.url, dying.url, "dying")
    workers.start(redis_server.url, alive.url, "alive")
    proc = _submit(tmp_path, redis_server.url, 6)
    assert proc.returncode == 0, proc.stderr + workers.logs()
    result = _result(proc)
    assert result["ok"] and result["validation_ok"]
    docs = json.loads((tmp_path / "run" / "artifact-metadata.json").read_text())["Scenes"]
    assert len(dying.submissions) >= 2  # it died on its second scene
    moved = [d for d in docs if d["SceneAttempts"] == 2]
    assert len(moved) == 1 and moved[0]["ServerUrl"] == alive.url


def test_submit_stops_within_its_bound_when_the_broker_goes_away(
    tmp_path: Path,
    start: Any,
    workers: Workers,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    slow = start(Scenario(run_seconds=3.0), output_dir=tmp_path / "o1")
    workers.start(redis_server.url, slow.url, "slow")
    args = [sys.executable, "-m", "scene_telemetry.cli", *_submit_args(tmp_path, redis_server.url, 4)]
    submit = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not slow.submissions and time.monotonic() < deadline:
            time.sleep(0.05)
        redis_server.stop()
        stopped = time.monotonic()
        out, err = submit.communicate(timeout=60)
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.communicate()
    elapsed = time.monotonic() - stopped
    assert submit.returncode == 10, err
    assert elapsed < 10.0 + 3.0  # BROKER_LOSS_BOUND_S, plus a ping timeout and a poll
    assert "unreachable for 10 s" in err and "--resume" in err
    assert redact_url(redis_server.url) in err and redis_server.password not in err + out
    # The broker comes back (empty: no persistence); the worker reconnects and --resume queues what is unfinished.
    (tmp_path / "redis-back").mkdir()
    back = start_redis(tmp_path / "redis-back", password=redis_server.password, port=redis_server.port)
    try:
        resumed = _submit(tmp_path, back.url, 4, "--resume")
    finally:
        back.stop()
    assert resumed.returncode == 0, resumed.stderr + workers.logs()
    assert [p.stem for p in _records(tmp_path / "run")] == ["s0", "s1", "s2", "s3"]
    assert validate_run(tmp_path / "run").ok


def test_submit_to_a_broker_that_is_not_there_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(_submit_args(tmp_path, "redis://:pw-not-shown@127.0.0.1:1/0", 1)[:-1])
    err = capsys.readouterr().err
    assert code == 10 and "unreachable" in err and "pw-not-shown" not in err and len(err.strip().splitlines()) == 1


def test_a_slow_worker_leaves_the_last_scenes_to_a_faster_one(redis_server: RedisServer) -> None:  # noqa: F811
    slow = SharedPace(redis_server.url, "slow@host", "test-queue")
    fast = SharedPace(redis_server.url, "fast@host", "test-queue")
    try:
        assert not slow.should_leave()  # no pace of its own yet: it takes the scene
        slow.end(4.0, ok=True)
        assert not slow.should_leave()  # nobody else has a pace
        fast.end(0.5, ok=True)
        assert slow.should_leave()  # one waiting scene: the fast worker ends it in 0.5 s, the slow one in 4 s
        slow.client.rpush("test-queue", *[b"x"] * 10)
        assert not slow.should_leave()  # 11 scenes: the fast one alone cannot end them all within 4 s
        slow.client.delete("test-queue")
        stale = json.dumps({"seconds": 0.5, "started": None, "updated": time.time() - 60})
        slow.client.hset(KEY, "fast@host", stale)
        assert not slow.should_leave()  # a worker silent for a minute (dead) is not counted on
    finally:
        slow.client.close()
        fast.client.close()


def test_a_worker_whose_server_lacks_a_node_class_leaves_the_run_to_the_others(
    tmp_path: Path,
    start: Any,
    workers: Workers,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    lacking = start(Scenario(), output_dir=tmp_path / "o1", missing_classes=("ImageAddNoise",))
    able = start(Scenario(run_seconds=0.2), output_dir=tmp_path / "o2")
    workers.start(redis_server.url, lacking.url, "lacking")
    workers.start(redis_server.url, able.url, "able")
    proc = _submit(tmp_path, redis_server.url, 3)
    assert proc.returncode == 0, proc.stderr + workers.logs()
    assert lacking.submissions == [] and len(able.submissions) == 3
    assert "ImageAddNoise" in workers.logs()


def test_status_lists_the_queued_scenes_when_no_worker_runs(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    args = [sys.executable, "-m", "scene_telemetry.cli", *_submit_args(tmp_path, redis_server.url, 3)]
    submit = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, report = time.monotonic() + 30, {"queued": []}
        while len(report["queued"]) < 3 and time.monotonic() < deadline:
            _, report = farm_status(redis_server.url)
    finally:
        submit.kill()
        submit.communicate()
    assert report["queued"] == ["farm-run/s0", "farm-run/s1", "farm-run/s2"] and report["workers"] == []


def test_a_worker_finds_the_run_folder_under_its_own_mount_of_the_shared_folder(
    tmp_path: Path,
    start: Any,
    workers: Workers,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """``--out DIR`` on a worker: the run folder NAME is DIR/NAME there (another machine mounts it elsewhere)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    (tmp_path / "run").mkdir()
    (mount / "run").symlink_to(tmp_path / "run")  # this machine's view of the same folder, by another path
    fake = start(Scenario(run_seconds=0.1), output_dir=tmp_path / "o1")
    workers.start(redis_server.url, fake.url, "mounted", "--out", str(mount))
    proc = _submit(tmp_path, redis_server.url, 2)
    assert proc.returncode == 0, proc.stderr + workers.logs()
    state = json.loads((tmp_path / "run" / ".farm" / "state" / "s0" / ".runner-state.json").read_text())
    assert state["RunId"] == "farm-run" and (tmp_path / "run" / "s0" / "frame.done").is_file()
    config = WorkerConfig(FarmServer(fake.url, "srv-x"), out_root=str(mount))
    assert run_dir_of({"run_name": "run", "run_dir": "/submitter/only/run"}, config) == mount / "run"


def test_a_redelivered_scene_re_attaches_to_its_prompt_on_the_same_server(
    tmp_path: Path,
    start: Any,
    workers: Workers,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    fake = start(Scenario(run_seconds=2.0), output_dir=tmp_path / "o1")
    first = workers.start(redis_server.url, fake.url, "first")
    args = [sys.executable, "-m", "scene_telemetry.cli", *_submit_args(tmp_path, redis_server.url, 2)]
    submit = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not fake.submissions and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake.submissions, "the worker never took a scene"
        workers.kill(first)  # the whole worker dies; ComfyUI goes on with the prompt
        workers.start(redis_server.url, fake.url, "second")  # the same server gets a new worker
        out, err = submit.communicate(timeout=120)
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.communicate()
    assert submit.returncode == 0, err + workers.logs()
    lost = fake.submissions[0]["prompt_id"]
    assert len(fake.submissions) == 2  # the lost scene was not queued again: its prompt was re-attached
    docs = json.loads((tmp_path / "run" / "artifact-metadata.json").read_text())["Scenes"]
    assert lost in {d["PromptId"] for d in docs} and validate_run(tmp_path / "run").ok
