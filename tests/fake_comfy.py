"""A fault-injecting ComfyUI 0.8.0 stand-in on loopback, for client and runner tests.

A real aiohttp server runs in its own thread on ``127.0.0.1`` (free port) and
serves the routes a headless client uses: ``POST /prompt``, ``GET
/history/{id}``, ``GET /queue``, ``GET /system_stats``, ``GET /object_info``,
``GET /view``, ``POST /interrupt`` and ``GET /ws?clientId=`` (each also under
``/api``), plus ``GET /history?max_items=N`` and ``GET /api/jobs[/{id}]`` (shaped
after ComfyUI 0.8.0's ``server.py`` and ``comfy_execution/jobs.py``; the recordings
have no jobs replies). Replies and websocket messages are replayed from the recordings in
``tests/data/comfyui-0.8.0/transcripts/`` with the real prompt id and fresh
timestamps substituted; nothing about their shape is invented. After the final
message the history entry is written, the queue drained, ``status`` broadcast
and ``executing {node: null}`` sent to the submitter (ComfyUI's
``prompt_worker`` order; see comfyui-facts §5 - the recordings stop at the
final message).

Each submission consumes the next :class:`Scenario` (the last one repeats), so a
test can script "execution error, then success" for retry budgets. Faults a
scenario can inject: history late, history never written, websocket dropped
mid-run (optionally refusing reconnects for a while), a restart (connections
refused, then back with empty history and queue) or a server that never comes
back, HTTP 500 on ``/history/{id}``, execution error, interrupt, a slow run,
and frames written with or without a ``.done`` marker.

Usage::

    with FakeComfy(Scenario(case="success", history_delay_s=0.2), output_dir=tmp) as fake:
        client = ComfyClient(fake.url)
        ...

or through the :func:`fake_comfy` fixture factory.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import WSMsgType, web

TRANSCRIPTS = Path(__file__).resolve().parent / "data" / "comfyui-0.8.0"
CASE_FILES = {
    "success": "success_frames.json",
    "success_webp": "success_webp.json",
    "cached": "success_cached_rerun.json",
    "error": "error_runtime.json",
    "interrupted": "interrupted.json",
}
FINAL_TYPES = ("execution_success", "execution_error", "execution_interrupted")
_CONTROL_TIMEOUT_S = 10.0  # a control call into the server thread that takes longer means a hung fake
# Going down: loop ticks that let connections already accepted finish their setup before the listener closes
# (one for the accept task to build its transport, one for connection_made to register it with aiohttp).
_ACCEPT_SETTLE_TICKS = 2
_CONNECTION_CLOSE_TIMEOUT_S = 2.0  # reset connections close within a tick or two; longer means a stuck handler
_CONNECTION_CLOSE_POLL_S = 0.001  # aiohttp has no "connection closed" event to await, so poll its registry
_FRAME_SIDE_CAP = 64  # frames written by the fake stay tiny: tests exercise markers, not encoders
PREVIEW_FRAME = b"\x00\x00\x00\x01\x00\x00\x00\x02" + b"\x89PNG\r\n\x1a\n"  # type 1 preview, PNG, truncated body


@dataclass
class Scenario:
    """What happens to one submitted prompt (the faults are all off by default)."""

    case: str = "success"
    """Recorded transcript to replay: success, success_webp, cached, error, interrupted."""
    run_seconds: float = 0.0
    """Extra time before the final message (an 'interrupted' run waits this long for POST /interrupt)."""
    history_delay_s: float = 0.0
    """The history entry appears this long after the final message (the race, exaggerated)."""
    history_never: bool = False
    """The history entry is never written (the prompt still leaves the queue)."""
    drop_ws_after: int | None = None
    """Close every websocket after this many replayed run messages."""
    ws_refuse_s: float = 0.0
    """After a drop, answer websocket upgrades with HTTP 503 for this long (forces history polling)."""
    restart_after: int | None = None
    """After this many run messages the server goes down (connections refused) and loses history and queue."""
    down_s: float | None = 0.2
    """How long a restart keeps the port closed; None = the server never comes back."""
    history_500: int = 0
    """The first N GET /history/{id} for this prompt answer HTTP 500."""
    frames: int | None = None
    """Frames to write when the fake has an output_dir (default: the prompt's batch_size, else 2)."""
    write_marker: bool = True
    """Write the .done marker after the frames (False: the marker never appears)."""
    progress_steps: int = 0
    """Insert this many ``progress`` messages before the last node's ``executed``/final message."""
    binary_previews: bool = False
    """Send a binary preview frame after each ``executing`` (clients must skip it)."""
    node_errors: dict[str, Any] | None = None
    """Answer 200 with these node_errors (outputs dropped by validation; the prompt is not queued)."""
    reject: str | None = None
    """Answer 400 with a recorded rejection: 'bad_input' or 'invalid_node'."""
    prompt_fault: str | None = None
    """Answer POST /prompt without queuing anything: '500' (HTTP 500, aiohttp's text page) or 'html' (HTTP 200
    with an HTML page, as a proxy or login wall in front of ComfyUI answers)."""


@dataclass
class _Job:
    number: int
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    client_id: str | None
    scenario: Scenario
    outputs_to_execute: list[str]
    interrupt: asyncio.Event = field(default_factory=asyncio.Event)

    def queue_item(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]


def load_transcript(case: str) -> dict[str, Any]:
    """One recorded transcript (a fresh copy): a Scenario case or a transcript file stem."""
    name = CASE_FILES.get(case, f"{case}.json")
    data: dict[str, Any] = json.loads((TRANSCRIPTS / "transcripts" / name).read_text("utf-8"))
    return data


def _load_json(name: str) -> Any:
    return json.loads((TRANSCRIPTS / name).read_text("utf-8"))


_OBJECT_INFO_CACHE: dict[str, Any] = {}


def object_info() -> dict[str, Any]:
    """Recorded core /object_info plus this pack's nodes built from NODE_CLASS_MAPPINGS."""
    if not _OBJECT_INFO_CACHE:
        from scene_telemetry import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

        _OBJECT_INFO_CACHE.update(_load_json("object_info.json"))
        for name, cls in NODE_CLASS_MAPPINGS.items():
            _OBJECT_INFO_CACHE[name] = _node_info(name, cls, NODE_DISPLAY_NAME_MAPPINGS.get(name, name))
    return _OBJECT_INFO_CACHE


def _node_info(name: str, cls: type[Any], display: str) -> dict[str, Any]:
    """The /object_info entry ComfyUI builds for a V1 node (server.node_info)."""
    inputs = cls.INPUT_TYPES()
    info_inputs = {k: {n: list(v) for n, v in inputs[k].items()} for k in ("required", "optional") if k in inputs}
    if "hidden" in inputs:
        info_inputs["hidden"] = dict(inputs["hidden"])
    returns = list(cls.RETURN_TYPES)
    return {
        "input": info_inputs,
        "input_order": {k: list(inputs[k]) for k in ("required", "optional", "hidden") if k in inputs},
        "output": returns,
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(returns))),
        "output_name": list(getattr(cls, "RETURN_NAMES", returns)),
        "name": name,
        "display_name": display,
        "description": getattr(cls, "DESCRIPTION", ""),
        "python_module": "custom_nodes.scene-telemetry",
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
        "output_tooltips": list(getattr(cls, "OUTPUT_TOOLTIPS", [])),
    }


def _substitute(messages: list[dict[str, Any]], old_id: str, new_id: str, now_ms: int) -> list[dict[str, Any]]:
    """Replace the recorded prompt id and give every timestamp the current epoch ms."""
    text = json.dumps(messages).replace(old_id, new_id)
    out: list[dict[str, Any]] = json.loads(text)
    for msg in out:
        data = msg.get("data")
        if isinstance(data, dict) and "timestamp" in data:
            data["timestamp"] = now_ms
    return out


def _epoch_ms() -> int:
    return int(time.time() * 1000)


def _find_inputs(prompt: dict[str, Any]) -> tuple[str | None, str | None, dict[str, int]]:
    """(node id, filename_prefix) of the first saving node, and width/height/batch_size if any node has them."""
    node, prefix, sizes = None, None, {}
    for nid, spec in prompt.items():
        inputs = spec.get("inputs", {}) if isinstance(spec, dict) else {}
        if prefix is None and isinstance(inputs.get("filename_prefix"), str):
            node, prefix = str(nid), inputs["filename_prefix"]
        for key in ("width", "height", "batch_size"):
            if isinstance(inputs.get(key), int) and key not in sizes:
                sizes[key] = inputs[key]
    return node, prefix, sizes


class FakeComfy:
    """The stand-in server; start/stop (or use as a context manager), always from the test thread."""

    def __init__(
        self,
        scenarios: Scenario | list[Scenario] | None = None,
        *,
        output_dir: str | Path | None = None,
        system_stats: dict[str, Any] | None = None,
        system_stats_500: int = 0,
        send_executing_null: bool = True,
        stall_s: dict[str, float] | None = None,
        trickle_s: dict[str, float] | None = None,
        jobs_api: bool = True,
        missing_classes: tuple[str, ...] = (),
    ) -> None:
        if scenarios is None:
            scenarios = Scenario()
        self._scenarios = [scenarios] if isinstance(scenarios, Scenario) else list(scenarios)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.system_stats_reply = (
            system_stats if system_stats is not None else _load_json("transcripts/system_stats.json")
        )
        self.system_stats_500 = system_stats_500
        self.send_executing_null = send_executing_null
        self.stall_s = dict(stall_s or {})
        """``"METHOD /path"`` prefix (``/api`` stripped, e.g. ``"POST /prompt"``, ``"GET /history/"``) → seconds
        the server sits on such a request before handling it (a wedged event loop)."""
        self.jobs_api = jobs_api
        self.missing_classes = set(missing_classes)
        """Node classes this server's /object_info leaves out (a server without some custom node pack)."""
        """False: no ``/api/jobs`` routes (404), like a ComfyUI older than the jobs API."""
        self.trickle_s = dict(trickle_s or {})
        """Same keys → the reply body is sent one byte at a time, this many seconds apart (a trickling server)."""
        self._stopping: asyncio.Event | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.requests: list[tuple[str, str]] = []
        """(method, path with query) of every HTTP request, in order (ws upgrades included)."""
        self.submissions: list[dict[str, Any]] = []
        """Every POST /prompt body."""
        self.final_sent_at: dict[str, float] = {}
        """prompt_id → time.perf_counter() when the final ws message was sent (benchmarks)."""
        self.history_written_at: dict[str, float] = {}
        """prompt_id → time.perf_counter() when the history entry became readable."""
        self.restarts = 0
        self._history: dict[str, dict[str, Any]] = {}
        self._history_500: dict[str, int] = {}
        self._running: list[_Job] = []
        self._pending: list[_Job] = []
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._ws_refuse_until = 0.0
        self._number = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._listener: socket.socket | None = None
        self._transition: asyncio.Lock | None = None
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._up = False

    # ---------------------------------------------------------------- lifecycle (test thread)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeComfy:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="fake-comfy", daemon=True)
        self._thread.start()
        if not ready.wait(_CONTROL_TIMEOUT_S):
            raise RuntimeError("fake ComfyUI did not start")
        return self

    def stop(self) -> None:
        """Reset every connection, wait until each socket is closed, then end the server thread."""
        if self._loop is None or self._thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(_CONTROL_TIMEOUT_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_CONTROL_TIMEOUT_S)
            self._loop = None

    def __enter__(self) -> FakeComfy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def go_down(self, *, lose_state: bool = True) -> None:
        """Close the port (connections refused) and drop every socket; *lose_state* = a restart."""
        self._call(self._go_down(lose_state))

    def come_up(self) -> None:
        """Listen again on the same port."""
        self._call(self._come_up())

    def history_entry(self, prompt_id: str) -> dict[str, Any] | None:
        return self._history.get(prompt_id)

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None, "fake ComfyUI is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CONTROL_TIMEOUT_S)

    # ---------------------------------------------------------------- server thread

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._setup())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()

    async def _setup(self) -> None:
        app = web.Application()
        routes = [
            ("POST", "/prompt", self._post_prompt),
            ("GET", "/history", self._get_history_list),
            ("GET", "/history/{prompt_id}", self._get_history),
            ("GET", "/queue", self._get_queue),
            ("GET", "/system_stats", self._get_system_stats),
            ("GET", "/object_info", self._get_object_info),
            ("GET", "/object_info/{node_class}", self._get_object_info_one),
            ("GET", "/view", self._get_view),
            ("POST", "/interrupt", self._post_interrupt),
            ("POST", "/queue", self._post_queue),
            ("GET", "/ws", self._ws),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, "/api" + path, handler)
        if self.jobs_api:  # registered as /api/jobs in server.py (no bare /jobs twin)
            app.router.add_route("GET", "/api/jobs", self._get_jobs)
            app.router.add_route("GET", "/api/jobs/{job_id}", self._get_job)
        app.middlewares.append(self._log_request)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        self._transition = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._work())
        await self._come_up()

    async def _come_up(self) -> None:
        assert self._runner is not None and self._transition is not None
        async with self._transition:
            if self._up:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))  # port 0 on the first start: the kernel picks a free one
            self.port = listener.getsockname()[1]
            self._listener = listener
            self._site = web.SockSite(self._runner, listener)
            await self._site.start()
            self._up = True

    async def _go_down(self, lose_state: bool) -> None:
        assert self._transition is not None
        async with self._transition:
            if self._up:
                await self._stop_listening()
                self._up = False
            self._sockets.clear()
            await self._close_connections()
        if lose_state:
            self.restarts += 1
            self._history.clear()
            for job in self._running + self._pending:
                job.interrupt.set()
            self._running.clear()
            self._pending.clear()
            assert self._queue is not None
            while not self._queue.empty():
                self._queue.get_nowait()

    async def _stop_listening(self) -> None:
        """Close the port so that new connections are refused, without orphaning one accepted a moment ago.

        asyncio accepts a connection in one loop tick and builds its transport in a task one tick later. If
        the server is closed in between, building the transport fails (``Server._attach`` asserts the server
        is open, CPython gh-109564) and asyncio drops the accepted socket without closing it: the client hangs
        and the socket surfaces later as an unclosed-socket ResourceWarning. So stop accepting first, let the
        accepted connections finish their setup (they are then reset with the rest), and only then close.
        """
        assert self._listener is not None and self._site is not None
        asyncio.get_running_loop().remove_reader(self._listener.fileno())
        for _ in range(_ACCEPT_SETTLE_TICKS):
            await asyncio.sleep(0)
        await self._site.stop()  # closes the listening socket

    async def _close_connections(self) -> None:
        """Reset every open connection, websockets included, as a crashed process would (no close frame).

        Returns once aiohttp has seen each one lost, i.e. once every accepted socket is closed.
        """
        server = self._runner.server if self._runner is not None else None
        if server is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CONNECTION_CLOSE_TIMEOUT_S
        while server.connections:
            for handler in server.connections:
                if handler.transport is not None:
                    handler.transport.abort()
            if loop.time() > deadline:
                raise RuntimeError(f"fake ComfyUI: {len(server.connections)} connection(s) still open after reset")
            await asyncio.sleep(_CONNECTION_CLOSE_POLL_S)

    async def _shutdown(self) -> None:
        if self._stopping is not None:
            self._stopping.set()  # stalled and trickling replies give up at once
        for job in self._running + self._pending:
            job.interrupt.set()
        tasks = [t for t in (self._worker, *self._tasks) if t is not None]
        # Python 3.11's wait_for can swallow a cancel that races its inner future: cancel until done.
        while any(not t.done() for t in tasks):
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=0.05)
        await self._go_down(lose_state=False)
        assert self._runner is not None
        await self._runner.cleanup()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @web.middleware
    async def _log_request(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        key = f"{request.method} {request.path.removeprefix('/api')}"
        stall = next((s for k, s in self.stall_s.items() if key.startswith(k)), 0.0)
        if stall > 0 and await self._pause(stall):
            return web.Response(status=503)
        response: web.StreamResponse = await handler(request)
        gap = next((g for k, g in self.trickle_s.items() if key.startswith(k)), 0.0)
        if gap > 0 and isinstance(response, web.Response) and isinstance(response.body, bytes):
            return await self._trickle(request, response, gap)
        return response

    async def _pause(self, seconds: float) -> bool:
        """Sleep *seconds*, or less when the fake stops; True when it stopped."""
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def _trickle(self, request: web.Request, response: web.Response, gap: float) -> web.StreamResponse:
        body = bytes(response.body) if isinstance(response.body, bytes) else b""
        stream = web.StreamResponse(status=response.status, headers={"Content-Type": response.content_type})
        stream.content_length = len(body)
        await stream.prepare(request)
        for index in range(len(body)):
            try:
                await stream.write(body[index : index + 1])
            except ConnectionError:
                return stream
            if await self._pause(gap):
                return stream
        await stream.write_eof()
        return stream

    # ---------------------------------------------------------------- HTTP routes

    async def _post_prompt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.Response(status=500, text="500 Internal Server Error")
        self.submissions.append(body)
        scenario = self._scenarios[min(len(self.submissions) - 1, len(self._scenarios) - 1)]
        if scenario.prompt_fault == "500":
            return web.Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")
        if scenario.prompt_fault == "html":
            page = "<!DOCTYPE html><html><body><h1>Sign in</h1></body></html>"
            return web.Response(text=page, content_type="text/html")
        if scenario.reject is not None:
            recorded = _load_json(f"transcripts/error_{scenario.reject}.json")
            return web.json_response(recorded["prompt_reply"], status=recorded["prompt_status"])
        prompt = body.get("prompt")
        if not isinstance(prompt, dict) or not prompt:
            reply = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided"}
            return web.json_response({"error": {**reply, "extra_info": {}}, "node_errors": {}}, status=400)
        unknown = [nid for nid, spec in prompt.items() if spec.get("class_type") not in object_info()]
        if unknown:
            return web.json_response(_invalid_node_reply(prompt, unknown[0]), status=400)
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        self._number += 1
        if scenario.node_errors:
            return web.json_response(
                {"prompt_id": prompt_id, "number": self._number, "node_errors": scenario.node_errors}
            )
        extra = dict(body.get("extra_data") or {})
        client_id = body.get("client_id")
        if client_id is not None:
            extra["client_id"] = client_id
        extra["create_time"] = _epoch_ms()
        recorded = load_transcript(scenario.case)
        outputs = list(recorded["history"][recorded["prompt_reply"]["prompt_id"]]["prompt"][4])
        job = _Job(self._number, prompt_id, prompt, extra, client_id, scenario, outputs)
        self._history_500[prompt_id] = scenario.history_500
        self._pending.append(job)
        assert self._queue is not None
        self._queue.put_nowait(job)
        await self._broadcast_status()
        return web.json_response({"prompt_id": prompt_id, "number": self._number, "node_errors": {}})

    async def _get_history(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        if self._history_500.get(prompt_id, 0) > 0:
            self._history_500[prompt_id] -= 1
            return web.Response(status=500, text="500 Internal Server Error")
        entry = self._history.get(prompt_id)
        return web.json_response({} if entry is None else {prompt_id: entry})

    async def _get_history_list(self, request: web.Request) -> web.Response:
        """``/history?max_items=N``: the newest N entries, oldest first (PromptQueue.get_history)."""
        items = list(self._history.items())
        max_items = request.query.get("max_items")
        if max_items is not None:
            items = items[max(0, len(items) - int(max_items)) :]
        return web.json_response(dict(items))

    async def _get_jobs(self, request: web.Request) -> web.Response:
        """``GET /api/jobs`` as ComfyUI 0.8.0's server.get_jobs + comfy_execution/jobs.get_all_jobs build it."""
        query = request.query
        wanted = [s.strip().lower() for s in query.get("status", "").split(",") if s.strip()] or list(JOB_STATUSES)
        bad = [s for s in wanted if s not in JOB_STATUSES]
        if bad:
            message = f"Invalid status value(s): {', '.join(bad)}. Valid values: {', '.join(JOB_STATUSES)}"
            return web.json_response({"error": message}, status=400)
        jobs: list[dict[str, Any]] = []
        if "in_progress" in wanted:
            jobs += [_job_from_queue(j.queue_item(), "in_progress") for j in self._running]
        if "pending" in wanted:
            jobs += [_job_from_queue(j.queue_item(), "pending") for j in self._pending]
        for prompt_id, entry in self._history.items():
            failed = entry.get("status", {}).get("status_str") == "error"
            if ("failed" if failed else "completed") in wanted:
                jobs.append(_job_from_history(prompt_id, entry, include_outputs=False))
        jobs.sort(key=lambda j: j.get("create_time", 0), reverse=query.get("sort_order", "desc") == "desc")
        total, offset = len(jobs), max(0, int(query.get("offset", 0)))
        limit = int(query["limit"]) if "limit" in query else None
        page = jobs[offset:][:limit] if limit is not None else jobs[offset:]
        pagination = {"offset": offset, "limit": limit, "total": total, "has_more": offset + len(page) < total}
        return web.json_response({"jobs": page, "pagination": pagination})

    async def _get_job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        entry = self._history.get(job_id)
        if entry is not None:
            return web.json_response(_job_from_history(job_id, entry, include_outputs=True))
        for jobs, status in ((self._running, "in_progress"), (self._pending, "pending")):
            for job in jobs:
                if job.prompt_id == job_id:
                    return web.json_response(_job_from_queue(job.queue_item(), status))
        return web.json_response({"error": "Job not found"}, status=404)

    async def _get_queue(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "queue_running": [j.queue_item() for j in self._running],
                "queue_pending": [j.queue_item() for j in self._pending],
            }
        )

    async def _get_system_stats(self, request: web.Request) -> web.Response:
        if self.system_stats_500 > 0:
            self.system_stats_500 -= 1
            return web.Response(status=500, text="500 Internal Server Error")
        return web.json_response(self.system_stats_reply)

    async def _get_object_info(self, request: web.Request) -> web.Response:
        return web.json_response({k: v for k, v in object_info().items() if k not in self.missing_classes})

    async def _get_object_info_one(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        info = object_info()
        return web.json_response({name: info[name]} if name in info else {})

    async def _get_view(self, request: web.Request) -> web.StreamResponse:
        filename = request.query.get("filename", "")
        subfolder = request.query.get("subfolder", "")
        if request.query.get("type", "output") != "output" or self.output_dir is None:
            return web.Response(status=404)
        if not filename or filename.startswith("/") or ".." in filename:
            return web.Response(status=400)
        base = self.output_dir.resolve()
        folder = (base / subfolder).resolve()
        if not str(folder).startswith(str(base)):
            return web.Response(status=403)
        path = folder / filename
        if not path.is_file():
            return web.Response(status=404)
        return web.Response(body=path.read_bytes(), content_type="application/octet-stream")

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        wanted = None
        if request.can_read_body:
            try:
                wanted = (await request.json()).get("prompt_id")
            except json.JSONDecodeError:
                wanted = None
        for job in self._running:
            if wanted is None or job.prompt_id == wanted:
                job.interrupt.set()
        return web.Response(status=200)

    async def _post_queue(self, request: web.Request) -> web.Response:
        """``{"delete": [ids]}`` drops pending prompts, ``{"clear": true}`` all of them (server.py post_queue)."""
        body = await request.json()
        if body.get("clear"):
            self._pending.clear()
        wanted = set(body.get("delete") or [])
        self._pending[:] = [job for job in self._pending if job.prompt_id not in wanted]
        return web.Response(status=200)

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if time.monotonic() < self._ws_refuse_until:
            return web.Response(status=503, text="try later")
        sid = request.query.get("clientId") or uuid.uuid4().hex
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        old = self._sockets.pop(sid, None)
        if old is not None:
            await old.close()
        self._sockets[sid] = ws
        remaining = len(self._running) + len(self._pending)
        await ws.send_json(
            {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": remaining}}, "sid": sid}}
        )
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
        if self._sockets.get(sid) is ws:
            del self._sockets[sid]
        return ws

    # ---------------------------------------------------------------- execution

    async def _send(self, sid: str | None, message: dict[str, Any] | bytes) -> None:
        targets = list(self._sockets.values()) if sid is None else [self._sockets[sid]] if sid in self._sockets else []
        for ws in targets:
            try:
                if isinstance(message, bytes):
                    await ws.send_bytes(message)
                else:
                    await ws.send_json(message)
            except ConnectionError:
                continue

    async def _broadcast_status(self) -> None:
        remaining = len(self._running) + len(self._pending)
        await self._send(None, {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": remaining}}}})

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            if job not in self._pending:
                continue  # dropped by a restart
            self._pending.remove(job)
            self._running.append(job)
            try:
                await self._execute(job)
            except _Lost:
                continue

    async def _execute(self, job: _Job) -> None:
        scenario = job.scenario
        recorded = load_transcript(scenario.case)
        old_id = recorded["prompt_reply"]["prompt_id"]
        # [0] is the per-connection status sent on connect, [1] the broadcast at POST time (sent by _post_prompt)
        messages = [m["msg"] for m in recorded["ws"]][2:]
        messages = _substitute(messages, old_id, job.prompt_id, _epoch_ms())
        *body, final = messages
        body = self._with_progress(body, job.prompt_id, scenario.progress_steps)
        outputs = copy.deepcopy(recorded["history"][old_id]["outputs"])
        if scenario.case.startswith("success") and self.output_dir is not None:
            outputs = self._write_frames(job, outputs)
            body = [self._with_outputs(m, outputs) for m in body]
        sent = 0
        for message in body:
            await self._fault_point(job, sent)
            if message["type"] == "status":
                message["data"]["status"]["exec_info"]["queue_remaining"] = len(self._running) + len(self._pending)
            await self._send(job.client_id, message)
            sent += 1
            if scenario.binary_previews and message["type"] == "executing":
                await self._send(job.client_id, PREVIEW_FRAME)
            await asyncio.sleep(0)
        await self._fault_point(job, sent)
        final = await self._await_final(job, final, recorded)
        final["data"]["timestamp"] = _epoch_ms()
        await self._send(job.client_id, final)
        self.final_sent_at[job.prompt_id] = time.perf_counter()
        if scenario.history_delay_s:
            await self._sleep_unless_lost(job, scenario.history_delay_s)
        if not scenario.history_never:
            self._history[job.prompt_id] = self._history_entry(job, messages, final, outputs)
            self.history_written_at[job.prompt_id] = time.perf_counter()
        if job in self._running:
            self._running.remove(job)
        await self._broadcast_status()
        if self.send_executing_null and job.client_id is not None:
            await self._send(job.client_id, {"type": "executing", "data": {"node": None, "prompt_id": job.prompt_id}})

    async def _await_final(self, job: _Job, final: dict[str, Any], recorded: dict[str, Any]) -> dict[str, Any]:
        """Wait out run_seconds; an interrupt turns the final message into execution_interrupted."""
        scenario = job.scenario
        if scenario.run_seconds:
            try:
                await asyncio.wait_for(job.interrupt.wait(), scenario.run_seconds)
            except asyncio.TimeoutError:
                pass
        if job not in self._running:
            raise _Lost
        if job.interrupt.is_set() and final["type"] != "execution_interrupted":
            template = load_transcript("interrupted")
            old = template["prompt_reply"]["prompt_id"]
            final = _substitute([template["ws"][-1]["msg"]], old, job.prompt_id, _epoch_ms())[0]
        return final

    async def _sleep_unless_lost(self, job: _Job, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if job not in self._running:
            raise _Lost

    async def _fault_point(self, job: _Job, sent: int) -> None:
        scenario = job.scenario
        if scenario.drop_ws_after == sent:
            self._ws_refuse_until = time.monotonic() + scenario.ws_refuse_s
            sockets = [self._sockets.pop(job.client_id, None)] if job.client_id else []
            for ws in sockets:
                if ws is not None:
                    await ws.close()
        if scenario.restart_after == sent:
            await self._go_down(lose_state=True)
            if scenario.down_s is not None:
                self._spawn(self._come_up_later(scenario.down_s))
            raise _Lost

    async def _come_up_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._come_up()

    def _with_progress(self, body: list[dict[str, Any]], prompt_id: str, steps: int) -> list[dict[str, Any]]:
        if steps <= 0:
            return body
        executing = [i for i, m in enumerate(body) if m["type"] == "executing"]
        at = executing[-1] + 1 if executing else len(body)
        node = body[at - 1]["data"]["node"] if executing else None
        ticks = [
            {"type": "progress", "data": {"value": v, "max": steps, "prompt_id": prompt_id, "node": node}}
            for v in range(1, steps + 1)
        ]
        return body[:at] + ticks + body[at:]

    @staticmethod
    def _with_outputs(message: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
        if message["type"] == "executed" and message["data"]["node"] in outputs:
            message["data"]["output"] = outputs[message["data"]["node"]]
        return message

    def _write_frames(self, job: _Job, outputs: dict[str, Any]) -> dict[str, Any]:
        """Write frames (and the marker) like WriteDoneMarker would; history lists the real files."""
        from scene_telemetry.telemetry import SceneContext, write_frames_with_marker
        from scene_telemetry.telemetry._frames import save_png_frames
        from scene_telemetry.telemetry._paths import plan_save

        assert self.output_dir is not None
        node, prefix, sizes = _find_inputs(job.prompt)
        count = job.scenario.frames or sizes.get("batch_size", 2)
        side_w = min(sizes.get("width", 8), _FRAME_SIDE_CAP)
        side_h = min(sizes.get("height", 8), _FRAME_SIDE_CAP)
        images = np.full((count, side_h, side_w, 3), 0.5, dtype=np.float32)
        prefix = prefix or "fake/frame"
        if job.scenario.write_marker:
            scene_id = job.prompt[node]["inputs"].get("scene_id") if node is not None else None
            # As WriteDoneMarker: the node's scene_id input ("" = none) lands in the marker's SceneId.
            context = SceneContext(prompt_id=job.prompt_id, node_id=node, scene_id=scene_id or None)
            done = write_frames_with_marker(
                images, self.output_dir, prefix, context=context, embed_metadata=False, workers=1
            )
            paths, subfolder = done.frame_paths, done.subfolder
        else:
            plan = plan_save(self.output_dir, prefix, side_w, side_h)
            paths = [plan.folder / plan.frame_name(i) for i in range(count)]
            save_png_frames(images, paths, info=None, workers=1)
            subfolder = plan.subfolder
        images_ui = [{"filename": p.name, "subfolder": subfolder, "type": "output"} for p in paths]
        key = node if node is not None else next(iter(outputs), "2")
        return {key: {"images": images_ui}}

    def _history_entry(
        self, job: _Job, messages: list[dict[str, Any]], final: dict[str, Any], outputs: dict[str, Any]
    ) -> dict[str, Any]:
        kept = [m for m in messages if m["type"] in ("execution_start", "execution_cached")] + [final]
        success = final["type"] == "execution_success"
        status = {
            "status_str": "success" if success else "error",
            "completed": success,
            "messages": [[m["type"], m["data"]] for m in kept],
        }
        if not success:
            outputs = {}
        meta = {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n} for n in outputs}
        return {"prompt": job.queue_item(), "outputs": outputs, "status": status, "meta": meta}


JOB_STATUSES = ("pending", "in_progress", "completed", "failed")


def _pruned(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _job_from_queue(item: list[Any], status: str) -> dict[str, Any]:
    """comfy_execution/jobs.normalize_queue_item."""
    extra = item[3]
    workflow_id = extra.get("extra_pnginfo", {}).get("workflow", {}).get("id")
    return _pruned(
        {
            "id": item[1],
            "status": status,
            "priority": item[0],
            "create_time": extra.get("create_time"),
            "outputs_count": 0,
            "workflow_id": workflow_id,
        }
    )


def _job_from_history(prompt_id: str, entry: dict[str, Any], *, include_outputs: bool) -> dict[str, Any]:
    """comfy_execution/jobs.normalize_history_item (ComfyUI 0.8.0), previews reduced to the first output file."""
    number, _, prompt, extra, _ = entry["prompt"]
    status_info = entry.get("status") or {}
    start = end = error = None
    for event, data in status_info.get("messages", []):
        if event == "execution_start":
            start = data.get("timestamp")
        elif event in FINAL_TYPES:
            end = data.get("timestamp")
            error = data if event == "execution_error" else None
    outputs = entry.get("outputs", {})
    items = [
        {**item, "nodeId": node, "mediaType": kind}
        for node, ui in outputs.items()
        for kind, listed in ui.items()
        if kind != "animated" and isinstance(listed, list)
        for item in listed
        if isinstance(item, dict)
    ]
    job = _pruned(
        {
            "id": prompt_id,
            "status": "failed" if status_info.get("status_str") == "error" else "completed",
            "priority": number,
            "create_time": extra.get("create_time"),
            "execution_start_time": start,
            "execution_end_time": end,
            "execution_error": error,
            "outputs_count": len(items),
            "preview_output": next((i for i in items if i.get("type") == "output"), None),
            "workflow_id": extra.get("extra_pnginfo", {}).get("workflow", {}).get("id"),
        }
    )
    if include_outputs:
        job["outputs"] = outputs
        job["execution_status"] = status_info
        job["workflow"] = {"prompt": prompt, "extra_data": extra}
    return job


class _Lost(Exception):
    """The running job vanished in a restart."""


def _invalid_node_reply(prompt: dict[str, Any], node_id: str) -> dict[str, Any]:
    """ComfyUI's 400 for an unknown class_type, shaped like transcripts/error_invalid_node.json."""
    class_type = prompt[node_id].get("class_type")
    return {
        "error": {
            "type": "invalid_prompt",
            "message": f"Cannot execute because node {class_type} does not exist.",
            "details": f"Node ID '#{node_id}'",
            "extra_info": {},
        },
        "node_errors": {},
    }


@contextlib.contextmanager
def fake_servers() -> Iterator[Callable[..., FakeComfy]]:
    """Yield ``start(*args, **kwargs) -> FakeComfy``; every fake started is stopped on exit."""
    started: list[FakeComfy] = []

    def start(*args: Any, **kwargs: Any) -> FakeComfy:
        fake = FakeComfy(*args, **kwargs).start()
        started.append(fake)
        return fake

    try:
        yield start
    finally:
        for fake in started:
            fake.stop()


@pytest.fixture
def fake_comfy() -> Iterator[Callable[..., FakeComfy]]:
    """Factory: ``fake_comfy(Scenario(...), output_dir=...)`` starts a fake; all are stopped on teardown.

    Test modules re-declare it locally (``with fake_servers() as start: yield start``) until the
    root conftest lists this module in ``pytest_plugins``.
    """
    with fake_servers() as start:
        yield start
