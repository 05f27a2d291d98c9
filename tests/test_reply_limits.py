"""A hostile server cannot make a client hold more than a reply's cap in memory (issue 9: dead or hostile server)."""

from __future__ import annotations

import io

import pytest
from scene_telemetry.comfy_api import _limits, client, gpu_remote
from scene_telemetry.comfy_api.client import ComfyClient
from scene_telemetry.telemetry import ClientError
from test_gpu_remote import StatsServer


class CountingBody(io.BytesIO):
    """A body that counts what the reader asked for, to show the read stops at the cap."""

    def __init__(self, size: int) -> None:
        super().__init__(b"x" * size)
        self.consumed = 0

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self.consumed += len(data)
        return data


def test_a_body_within_the_cap_is_read_whole() -> None:
    assert _limits.read_capped(CountingBody(3000), 3000) == b"x" * 3000


def test_a_body_past_the_cap_stops_one_byte_after_it() -> None:
    body = CountingBody(10 * 1024 * 1024)
    with pytest.raises(_limits.ReplyTooLarge, match="larger than 4096 bytes"):
        _limits.read_capped(body, 4096)
    assert body.consumed == 4097


def test_a_json_reply_past_the_cap_is_one_client_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "MAX_REPLY_BYTES", 1024)
    with StatsServer([(200, b"[" + b"0," * 4000 + b"0]")]) as server:
        with pytest.raises(ClientError) as caught:
            ComfyClient(server.url).queue()
    assert "reply larger than 1024 bytes: GET" in str(caught.value) and "/queue" in str(caught.value)


def test_an_error_body_past_the_cap_is_cut_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "MAX_REPLY_BYTES", 1024)
    with StatsServer([(500, b"e" * 8000)]) as server, pytest.raises(ClientError, match="larger than 1024"):
        ComfyClient(server.url).queue()


def test_view_has_the_larger_file_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "MAX_REPLY_BYTES", 1024)
    with StatsServer([(200, b"p" * 8000)]) as server:
        assert ComfyClient(server.url).view("frame_00001_.png", "") == b"p" * 8000


def test_a_huge_system_stats_reply_is_a_note_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_remote, "_MAX_STATS_BYTES", 1024)
    with StatsServer([(200, b"{" + b" " * 8000 + b"}")]) as server:
        reply, notes = gpu_remote.probe_system_stats(server.url, delay_s=0.01)
    assert reply is None and len(server.paths) == 1
    assert notes == [f"system_stats: {server.url}/system_stats: reply larger than 1024 bytes"]
