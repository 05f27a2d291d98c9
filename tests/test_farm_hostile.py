"""Hostile input to the farm options: credentials never echoed, one server never listed twice, a wrong broker
scheme or a worker --out that is a file refused with one line before anything starts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from scene_telemetry.cli._farm_run import resolve_servers
from scene_telemetry.cli.main import main


def _files(tmp_path: Path) -> list[str]:
    (tmp_path / "wf.json").write_text(json.dumps({"1": {"class_type": "EmptyImage", "inputs": {}}}))
    (tmp_path / "scenes.json").write_text(json.dumps([{"id": "s0"}]))
    return [str(tmp_path / "wf.json"), "--scenes", str(tmp_path / "scenes.json"), "--out", str(tmp_path / "run")]


@pytest.mark.parametrize(
    "url", ["http://user:hunter2@127.0.0.1:abc", "ftp://user:hunter2@127.0.0.1:1", "http://u:hun@ter2@h:99999"]
)
def test_a_bad_server_url_error_never_repeats_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *_files(tmp_path), "--server", url])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "hunter2" not in err and "ter2" not in err and "***@" in err


def test_a_bad_servers_file_line_never_repeats_its_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "servers.txt").write_text("http://user:hunter2@127.0.0.1:99999\n")
    code = main(["run", *_files(tmp_path), "--servers", str(tmp_path / "servers.txt")])
    err = capsys.readouterr().err
    assert code == 2 and "line 1" in err and "hunter2" not in err


def test_one_server_under_several_spellings_is_listed_once(tmp_path: Path) -> None:
    (tmp_path / "servers.txt").write_text(
        "http://127.0.0.1:8188/\nHTTP://LOCALHOST:8188\nhttp://[::1]:8188\nhttp://gpu1:80\nhttp://gpu1/\n"
        "http://127.0.0.1:8189\n"
    )
    args = argparse.Namespace(server=["http://localhost:8188"], servers=str(tmp_path / "servers.txt"))
    assert resolve_servers(args) == ["http://localhost:8188", "http://gpu1:80", "http://127.0.0.1:8189"]


@pytest.mark.parametrize("broker", ["amqp://u:hunter2@127.0.0.1:1/", "redis://:hunter2@127.0.0.1:abc/0", "hunter2"])
@pytest.mark.parametrize("command", ["status", "worker"])
def test_a_broker_that_is_not_a_redis_url_is_a_usage_error_without_its_password(
    capsys: pytest.CaptureFixture[str], broker: str, command: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["farm", command, "--broker", broker])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--broker" in err and "hunter2" not in err and "Traceback" not in err


def test_a_worker_whose_out_is_a_file_is_refused_before_it_touches_server_or_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "shared").write_text("not a folder")
    code = main(
        ["farm", "worker", "--broker", "redis://127.0.0.1:1/0", "--server", "http://127.0.0.1:1"]
        + ["--out", str(tmp_path / "shared")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "not a directory" in err and len(err.splitlines()) == 1


def test_a_server_url_with_credentials_is_refused_up_front_without_echoing_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The client cannot log in with them (every request failed as 'Name or service not known') and each
    error line repeated the password; now: exit 2, one line, before any request."""
    (tmp_path / "servers.txt").write_text("http://127.0.0.1:1\nhttp://alice:S3CRETPW@127.0.0.1:2\n")
    code = main(["run", *_files(tmp_path), "--servers", str(tmp_path / "servers.txt")])
    err = capsys.readouterr().err
    assert code == 2 and "line 2" in err and "user:password" in err and "S3CRETPW" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["farm", "worker", "--broker", "redis://127.0.0.1:1/0", "--server", "http://alice:S3CRETPW@127.0.0.1:2"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "user:password" in err and "S3CRETPW" not in err


@pytest.mark.parametrize(
    "stats",
    [
        {"system": "x", "devices": {"0": {"name": "gpu"}}},
        {"system": ["comfyui_version"], "devices": "cuda"},
        {"system": {"comfyui_version": "0.8.0"}, "devices": [1, None, {"name": 'a"\n}'}]},
    ],
)
def test_a_server_whose_system_stats_has_odd_shapes_is_named_not_a_traceback(stats: dict[str, object]) -> None:
    """A ``system`` that is not an object, or ``devices`` that is not a list of objects, crashed preflight
    (``'str' object has no attribute 'get'``), the farm worker and the farm's server check (``KeyError: 0``)."""
    from fake_comfy import FakeComfy
    from scene_telemetry.comfy_api.client import ComfyClient
    from scene_telemetry.comfy_api.preflight import run_preflight
    from scene_telemetry.farm.servers import FarmServer, check_server
    from scene_telemetry.farm.worker import identify_server

    workflow = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}
    with FakeComfy(system_stats=stats) as fake:
        report = run_preflight(ComfyClient(fake.url), ["EmptyImage"], server=fake.url, min_free_vram_mb=1.0)
        assert report.ok, report.failure
        assert report.comfyui_version in (None, "0.8.0")
        server = identify_server(fake.url)
        assert isinstance(server, FarmServer) and server.url == fake.url, server
        check = check_server(fake.url, workflow, [], {}, min_free_vram_mb=1.0)
        assert check.server is not None, check.problem


@pytest.mark.parametrize(
    ("run_name", "scene_id"),
    [("../escape", "s0"), ("/tmp", "s0"), ("run", "../../escape"), ("run", "/abs"), ("run", None)],
)
def test_a_worker_refuses_a_message_whose_names_would_leave_its_out_folder(
    tmp_path: Path, run_name: str, scene_id: str | None
) -> None:
    """Anyone who can write to the broker can send a message: its run name and scene id become paths."""
    from scene_telemetry.farm.servers import FarmServer
    from scene_telemetry.farm.tasks import WorkerConfig, execute

    shared = tmp_path / "shared"
    shared.mkdir()
    config = WorkerConfig(FarmServer("http://127.0.0.1:1", "srv-000000000000"), out_root=str(shared))
    payload = {
        "run_id": "r1",
        "run_name": run_name,
        "run_dir": str(tmp_path / "elsewhere"),
        "scene": {"id": scene_id, "values": {}},
        "workflow": {},
        "mapping": {},
        "policy": {},
    }
    requeued: list[object] = []
    result = execute(payload, config, requeue=requeued.append)
    assert "refused" in result and requeued == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"] and not any(shared.iterdir())


def test_a_worker_whose_metrics_port_is_taken_is_refused_at_start(capsys: pytest.CaptureFixture[str]) -> None:
    """The pool process binds the port after the worker started: a taken port was one log line there and a
    worker that runs scenes without the metrics it was asked for."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(
            ["farm", "worker", "--broker", "redis://127.0.0.1:1/0", "--server", "http://127.0.0.1:1"]
            + ["--metrics-port", str(port)]
        )
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"--metrics-port {port}" in err and len(err.splitlines()) == 1


def test_a_worker_with_a_wrong_broker_password_stops_at_once_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Celery retries a refused login like a dead broker (100 times, for hours): the worker looked alive."""
    from redis_server import start_redis

    redis = start_redis(tmp_path, password="right-pw")
    try:
        broker = f"redis://:wrong-pw@127.0.0.1:{redis.port}/0"
        code = main(["farm", "worker", "--broker", broker, "--server", "http://127.0.0.1:1"])
    finally:
        redis.stop()
    err = capsys.readouterr().err.strip()
    assert code == 2 and "refused this worker" in err and "wrong-pw" not in err and len(err.splitlines()) == 1


def test_a_per_server_count_beyond_any_server_is_a_usage_error(tmp_path: Path) -> None:
    """Each slot is a thread with its own websocket: --per-server 100000 would start 100000 threads per server."""
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *_files(tmp_path), "--server", "http://127.0.0.1:1", "--per-server", "100000"])
    assert exit_info.value.code == 2


def test_farm_status_skips_foreign_messages_on_the_queue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A JSON list (or a message whose headers are not an object) raised AttributeError, which `farm status`
    reported as "broker unreachable" (exit 10): one foreign message made the command useless."""
    import redis as redis_py
    from redis_server import start_redis
    from scene_telemetry.farm.celery_app import QUEUE

    server = start_redis(tmp_path, password="pw")
    try:
        client = redis_py.Redis.from_url(server.url)
        good = json.dumps({"headers": {"id": "run1:s0:1"}, "body": ""})
        for raw in [good, "[1, 2]", '{"headers": [1]}', "not json", '{"headers": {"id": "run1:s1:1"}}']:
            client.lpush(QUEUE, raw)
        client.close()
        code = main(["farm", "status", "--broker", server.url, "--json"])
    finally:
        server.stop()
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out)["queued"] == ["run1/s0", "run1/s1"]


def test_a_scene_whose_task_crashes_goes_back_to_the_queue_a_bounded_number_of_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery acknowledges a task that raised: the scene left the queue with no record and `farm submit` waited
    for ever (seen with a run folder the worker could not write)."""
    from fake_comfy import FakeComfy
    from scene_telemetry.farm import tasks
    from scene_telemetry.farm.servers import FarmServer
    from scene_telemetry.farm.tasks import MAX_CRASHES, WorkerConfig, execute_guarded
    from scene_telemetry.runner.policy import QueuePolicy
    from scene_telemetry.runner.scenes import MARKER_CLASS

    monkeypatch.setattr(tasks, "DOWN_BACKOFF_S", 0.0)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "run").write_text("a file where this worker expects the run folder")
    workflow = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": MARKER_CLASS, "inputs": {"images": ["1", 0], "filename_prefix": "x/f", "scene_id": ""}},
    }
    payload = {
        "run_id": "r1",
        "run_name": "run",
        "run_dir": str(tmp_path / "run"),
        "scene": {"id": "s0", "values": {}},
        "workflow": workflow,
        "mapping": {},
        "policy": QueuePolicy().as_dict(),
        "attempt": 1,
        "retries_left": 0,
    }
    requeued: list[dict[str, object]] = []
    with FakeComfy() as fake:
        config = WorkerConfig(FarmServer(fake.url, "srv-000000000000"), out_root=str(shared))
        result = execute_guarded(payload, config, requeue=requeued.append)
        assert result["requeued"] and "NotADirectoryError" in str(result["reason"])
        assert [p["crashes"] for p in requeued] == [1]
        with pytest.raises(NotADirectoryError):  # the last crash: Celery logs it and drops the message
            execute_guarded({**payload, "crashes": MAX_CRASHES}, config, requeue=requeued.append)
    assert len(requeued) == 1
