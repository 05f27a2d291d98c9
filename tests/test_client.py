"""ComfyClient and EventStream against the loopback stand-in (recorded ComfyUI 0.8.0 replies)."""

from __future__ import annotations

import gc
import json
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import FakeComfy, Scenario, fake_servers, load_transcript
from scene_telemetry.comfy_api.client import (
    ClientError,
    ComfyClient,
    EventStream,
    HttpStatusError,
    PromptRejected,
    ServerTimeout,
    ServerUnavailable,
    ws_url,
)

EVENT_TIMEOUT_S = 5.0  # upper bound for one expected websocket message; normally < 10 ms


def frames_prompt(prefix: str = "scene/frame", batch: int = 3) -> dict[str, dict[str, object]]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": batch, "color": 1}},
        "2": {
            "class_type": "SceneTelemetry_WriteDoneMarker",
            "inputs": {"images": ["1", 0], "filename_prefix": prefix},
        },
    }


def collect_until(events: EventStream, prompt_id: str, last_type: str) -> list[dict[str, Any]]:
    """Messages until *last_type* for *prompt_id* arrives (fails after EVENT_TIMEOUT_S of silence)."""
    seen: list[dict[str, Any]] = []
    while True:
        event = events.next_event(EVENT_TIMEOUT_S)
        assert event is not None, f"no {last_type} after {[e['type'] for e in seen]}"
        seen.append(event)
        data = event["data"]
        if event["type"] == last_type and isinstance(data, dict) and data.get("prompt_id") == prompt_id:
            return seen


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the other end closed or reset the connection (blocks until then, up to the socket timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def fake_comfy() -> Iterator[Callable[..., FakeComfy]]:
    """Factory of stand-ins with scripted scenarios, stopped on teardown."""
    with fake_servers() as start:
        yield start


@pytest.fixture
def fake_comfy_server() -> Iterator[FakeComfy]:
    """One stand-in replaying the recorded success transcript."""
    with FakeComfy() as fake:
        yield fake


def test_reads_recorded_server_documents(fake_comfy_server: FakeComfy) -> None:
    client = ComfyClient(fake_comfy_server.url)
    assert client.system_stats()["system"]["comfyui_version"] == "0.8.0"
    info = client.object_info()
    assert info["EmptyImage"]["input"]["required"]["width"][0] == "INT"
    assert info["SceneTelemetry_WriteDoneMarker"]["output_node"] is True
    assert client.queue() == {"queue_running": [], "queue_pending": []}


def test_submit_sends_our_ids_and_history_returns_the_entry(fake_comfy_server: FakeComfy) -> None:
    client = ComfyClient(fake_comfy_server.url, client_id="cid-1")
    with EventStream(fake_comfy_server.url, client.client_id) as events:
        reply = client.submit(frames_prompt(), prompt_id="pid-1", extra_data={"scene": "a"})
        collect_until(events, "pid-1", "executing")  # node null comes after the history write
        collect_until(events, "pid-1", "executing")
    body = fake_comfy_server.submissions[-1]
    assert (body["client_id"], body["prompt_id"], body["extra_data"]) == ("cid-1", "pid-1", {"scene": "a"})
    assert reply == {"prompt_id": "pid-1", "number": 1, "node_errors": {}}
    entry = client.history("pid-1")
    assert entry is not None and entry["status"]["status_str"] == "success"
    assert client.history("never-queued") is None
    assert ("GET", "/history/pid-1") in fake_comfy_server.requests


def test_unknown_node_is_rejected_with_the_recorded_400(fake_comfy_server: FakeComfy) -> None:
    client = ComfyClient(fake_comfy_server.url)
    with pytest.raises(PromptRejected) as caught:
        client.submit({"1": {"class_type": "NoSuchNodeType", "inputs": {}}}, prompt_id="p")
    exc = caught.value
    assert exc.error == load_transcript("error_invalid_node")["prompt_reply"]["error"]
    assert (exc.status, exc.error_type, exc.queued) == (400, "invalid_prompt", False)
    assert "NoSuchNodeType does not exist" in str(exc) and "Node ID '#1'" in str(exc)


def test_bad_input_lists_each_node_problem(fake_comfy: Callable[..., FakeComfy], tmp_path: Path) -> None:
    fake = fake_comfy(Scenario(reject="bad_input"))
    with pytest.raises(PromptRejected) as caught:
        ComfyClient(fake.url).submit(frames_prompt(), prompt_id="p")
    exc = caught.value
    assert exc.error_type == "prompt_outputs_failed_validation"
    assert exc.node_errors["1"]["errors"][0]["type"] == "invalid_input_type"
    assert "node 1 (EmptyImage): width, not-a-number" in str(exc)


def test_dropped_outputs_are_rejected_but_marked_queued(fake_comfy: Callable[..., FakeComfy]) -> None:
    errors = {"2": {"errors": [{"type": "value_not_in_list", "message": "m", "details": "d"}], "class_type": "X"}}
    fake = fake_comfy(Scenario(node_errors=errors))
    with pytest.raises(PromptRejected) as caught:
        ComfyClient(fake.url).submit(frames_prompt(), prompt_id="p-ne")
    assert (caught.value.queued, caught.value.prompt_id, caught.value.node_errors) == (True, "p-ne", errors)


def test_http_500_is_a_status_error(fake_comfy: Callable[..., FakeComfy]) -> None:
    fake = fake_comfy(system_stats_500=1)
    client = ComfyClient(fake.url)
    with pytest.raises(HttpStatusError) as caught:
        client.system_stats()
    assert caught.value.status == 500
    assert client.system_stats()["devices"][0]["type"] == "cpu"


def test_refused_connection_is_server_unavailable(fake_comfy_server: FakeComfy) -> None:
    client = ComfyClient(fake_comfy_server.url)
    fake_comfy_server.go_down()
    with pytest.raises(ServerUnavailable):
        client.queue()
    fake_comfy_server.come_up()
    assert client.queue()["queue_running"] == []
    with pytest.raises(ServerUnavailable):
        ComfyClient(f"http://127.0.0.1:{closed_port()}").system_stats()


def test_going_down_resets_a_connection_accepted_in_the_same_tick() -> None:
    """A connection the fake accepted just before its port closed is reset too, not leaked.

    Regression: asyncio builds an accepted connection's transport one loop tick after accepting it; a
    go-down landing in that tick used to leave the socket open (the client hung) until garbage collection
    raised an unclosed-socket ResourceWarning, which ``filterwarnings = error`` turned into a failed run.
    The loop is held while the client connects so that the go-down is ordered into exactly that tick.
    """
    gc.collect()  # earlier garbage must not be blamed on this test
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fake = FakeComfy().start()
        try:
            loop = fake._loop
            assert loop is not None
            held, release, went_down = threading.Event(), threading.Event(), threading.Event()

            async def go_down() -> None:
                await fake._go_down(lose_state=True)
                went_down.set()

            def hold_loop() -> None:
                held.set()
                release.wait(EVENT_TIMEOUT_S)
                # Runs first in the next tick, before that tick's accept; so the go-down task's first step
                # is queued ahead of the task that sets up the accepted connection.
                loop.call_soon(lambda: fake._spawn(go_down()))

            loop.call_soon_threadsafe(hold_loop)
            assert held.wait(EVENT_TIMEOUT_S)
            with socket.create_connection((fake.host, fake.port), timeout=EVENT_TIMEOUT_S) as client:
                release.set()  # the kernel has completed the handshake: the listener is readable
                assert closed_by_peer(client)  # a leaked connection never answers: socket.timeout
            assert went_down.wait(EVENT_TIMEOUT_S)
            with pytest.raises(ServerUnavailable):
                ComfyClient(fake.url).queue()  # never comes back
        finally:
            fake.stop()
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == []
    assert fake.restarts == 1


def test_silent_server_times_out_without_counting_as_refused() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # the kernel accepts the connection; nobody ever answers
        client = ComfyClient(f"http://127.0.0.1:{listener.getsockname()[1]}", request_timeout_s=0.2)
        started = time.monotonic()
        with pytest.raises(ServerTimeout):
            client.history("p")
        assert time.monotonic() - started < 2.0


def test_view_returns_file_bytes(fake_comfy: Callable[..., FakeComfy], output_dir: Path) -> None:
    fake = fake_comfy(output_dir=output_dir)
    client = ComfyClient(fake.url)
    with EventStream(fake.url, client.client_id) as events:
        client.submit(frames_prompt("v/shot"), prompt_id="pv")
        collect_until(events, "pv", "execution_success")
    marker = client.view("shot.done", "v")
    assert json.loads(marker)["PromptId"] == "pv"
    assert client.view("shot_00001_.png", "v") == (output_dir / "v" / "shot_00001_.png").read_bytes()
    with pytest.raises(HttpStatusError) as caught:
        client.view("missing.png", "v")
    assert caught.value.status == 404


def test_event_stream_replays_recorded_order_and_skips_binary_frames(fake_comfy: Callable[..., FakeComfy]) -> None:
    fake = fake_comfy(Scenario(binary_previews=True))
    client = ComfyClient(fake.url)
    with EventStream(fake.url, client.client_id) as events:
        hello = events.next_event(EVENT_TIMEOUT_S)
        assert hello is not None and hello["data"]["sid"] == client.client_id
        client.submit(frames_prompt(), prompt_id="po")
        seen = collect_until(events, "po", "execution_success")
    recorded = [m["msg"]["type"] for m in load_transcript("success")["ws"]][1:]
    assert [e["type"] for e in seen] == recorded
    assert all(isinstance(e, dict) for e in seen)


def test_event_stream_reconnects_after_a_drop(fake_comfy: Callable[..., FakeComfy]) -> None:
    fake = fake_comfy(Scenario(drop_ws_after=2, run_seconds=0.3))
    client = ComfyClient(fake.url)
    with EventStream(fake.url, client.client_id) as events:
        client.submit(frames_prompt(), prompt_id="pd")
        seen = collect_until(events, "pd", "execution_success")
        assert (events.connects, events.drops) == (2, 1)
    assert seen[0]["type"] == "status"


def test_event_stream_waits_while_the_server_is_down() -> None:
    events = EventStream(f"http://127.0.0.1:{closed_port()}", "c")
    with events:
        assert not events.connected
        started = time.monotonic()
        assert events.next_event(0.2) is None
        assert 0.15 <= time.monotonic() - started < 1.0
        assert events.connects == 0 and events.last_error is not None


def test_interrupt_stops_the_running_prompt(fake_comfy: Callable[..., FakeComfy]) -> None:
    fake = fake_comfy(Scenario(case="interrupted", run_seconds=10))
    client = ComfyClient(fake.url)
    with EventStream(fake.url, client.client_id) as events:
        client.submit(frames_prompt(), prompt_id="pi")
        collect_until(events, "pi", "executing")
        client.interrupt("pi")
        final = collect_until(events, "pi", "execution_interrupted")[-1]
    assert final["data"]["node_type"] == "SaveImage"


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://127.0.0.1:8188", "ws://127.0.0.1:8188/ws?clientId=a+b"),
        ("https://host/comfy/", "wss://host/comfy/ws?clientId=a+b"),
    ],
)
def test_ws_url(base: str, expected: str) -> None:
    assert ws_url(base, "a b") == expected


def test_rejects_a_url_without_scheme() -> None:
    with pytest.raises(ClientError):
        ComfyClient("127.0.0.1:8188")


def test_delete_pending_drops_a_queued_prompt_only() -> None:
    with FakeComfy([Scenario(run_seconds=30), Scenario()]) as fake:
        client = ComfyClient(fake.url)
        client.submit({"1": {"class_type": "EmptyImage", "inputs": {}}}, prompt_id="running")
        client.submit({"1": {"class_type": "EmptyImage", "inputs": {}}}, prompt_id="waiting")
        deadline = time.monotonic() + 5
        while not client.queue()["queue_running"] and time.monotonic() < deadline:
            time.sleep(0.01)
        client.delete_pending(["waiting", "running"])
        queue = client.queue()
    assert [item[1] for item in queue["queue_running"]] == ["running"] and queue["queue_pending"] == []


def test_a_trickling_reply_is_cut_at_the_whole_request_timeout(fake_comfy: Callable[..., FakeComfy]) -> None:
    # GET /queue's ~40-byte reply, one byte per 0.1 s: every read arrives well inside a 0.3 s socket timeout, so a
    # per-read timeout let the request run ~4 s. The timeout bounds the whole request.
    timeout_s, slack_s = 0.3, 0.3
    fake = fake_comfy(trickle_s={"GET /queue": 0.1})
    client = ComfyClient(fake.url, request_timeout_s=timeout_s)
    assert client.history("p") is None  # other routes are untouched
    started = time.monotonic()
    with pytest.raises(ServerTimeout):
        client.queue()
    assert time.monotonic() - started < timeout_s + slack_s
    started = time.monotonic()
    with pytest.raises(ServerTimeout):
        client.queue(timeout_s=0.1)  # a caller's shorter timeout bounds the whole request too
    assert time.monotonic() - started < 0.1 + slack_s


DEEP_JSON = "[" * 100_000 + "]" * 100_000
"""Valid JSON nested past the interpreter's recursion limit: ``json.loads`` raises RecursionError on it."""


class BrokenServer:
    """A broken or hostile server on 127.0.0.1: each GET answers 200 with ``replies[path]``, else DEEP_JSON."""

    def __init__(self) -> None:
        self.replies: dict[str, str] = {}
        replies = self.replies

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = replies.get(self.path, DEEP_JSON).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def broken_server() -> Iterator[BrokenServer]:
    broken = BrokenServer()
    thread = threading.Thread(target=broken.server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield broken
    finally:
        broken.server.shutdown()
        broken.server.server_close()
        thread.join()


@pytest.fixture
def deep_json_server(broken_server: BrokenServer) -> str:
    return broken_server.url


def test_a_reply_nested_too_deeply_is_a_client_error_not_a_recursion_error(deep_json_server: str) -> None:
    client = ComfyClient(deep_json_server, request_timeout_s=5.0)
    with pytest.raises(ClientError, match="invalid JSON"):
        client.queue()


def test_a_websocket_frame_nested_too_deeply_is_skipped_not_raised() -> None:
    assert EventStream._parse(DEEP_JSON) is None


def test_a_system_stats_probe_of_a_reply_nested_too_deeply_is_a_note(deep_json_server: str) -> None:
    from scene_telemetry.comfy_api.gpu_remote import probe_system_stats

    reply, notes = probe_system_stats(deep_json_server, tries=1)
    assert reply is None and len(notes) == 1 and "nested too deeply" in notes[0]


@pytest.mark.parametrize("queue", ['{"queue_running": 5, "queue_pending": 7}', '{"queue_running": {"a": 1}}'])
def test_locating_a_prompt_in_a_queue_of_the_wrong_shape_says_absent(broken_server: BrokenServer, queue: str) -> None:
    from scene_telemetry.comfy_api.history import locate_prompt

    broken_server.replies.update({"/history/p1": "{}", "/queue": queue})
    assert locate_prompt(ComfyClient(broken_server.url, request_timeout_s=5.0), "p1") == "absent"
