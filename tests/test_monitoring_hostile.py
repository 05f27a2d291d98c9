"""Hostile --webhook URLs: refused with one line that keeps their secrets, never a dead sender thread."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from scene_telemetry.cli.main import main
from scene_telemetry.monitoring import WebhookURLError, check_url
from scene_telemetry.monitoring._webhook import WebhookSender


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/h\u00e9", "http://127.0.0.1:9/a b?token=S3CRET", "http://127.0.0.1:9/x?token=S3CRET&a=\x7f"],
)
def test_a_webhook_url_http_client_cannot_send_is_refused_without_its_query(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    """A non-ASCII path killed the sender thread (UnicodeEncodeError): every later event was lost uncounted."""
    with pytest.raises(WebhookURLError) as error:
        check_url(url)
    assert "S3CRET" not in str(error.value) and "percent-encoded" in str(error.value)
    (tmp_path / "wf.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(tmp_path / "wf.json"), "--scenes", "x", "--out", str(tmp_path / "r"), "--webhook", url])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "S3CRET" not in err and "Traceback" not in err


def test_an_encoding_error_in_one_delivery_does_not_end_the_sender_thread() -> None:
    outcomes: list[str] = []
    done = threading.Event()

    def count(outcome: str) -> None:
        outcomes.append(outcome)
        if len(outcomes) == 2:
            done.set()

    sender = WebhookSender("http://127.0.0.1:9/h", secret=None, on_outcome=count, backoff_s=(0.01,), budget_s=1.0)

    def broken(*_args: object) -> int:
        raise UnicodeEncodeError("ascii", "\u00e9", 0, 1, "ordinal not in range(128)")

    sender._post = broken  # type: ignore[method-assign]
    try:
        assert sender.submit("scene.ended", b"{}") and sender.submit("scene.ended", b"{}")
        assert done.wait(5.0), outcomes
        assert outcomes == ["failed", "failed"] and sender._thread.is_alive()
    finally:
        sender.close(grace_s=0)


def test_a_receiver_that_trickles_its_reply_is_cut_at_the_try_timeout() -> None:
    """The socket timeout bounds each read only: a reply sent a byte every 0.1 s held the sender for as long
    as the receiver liked, far past the 3-tries-in-30-s bound."""
    import socket
    import time

    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)

    def trickle() -> None:
        conns = []
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                conns.append(conn)
            except OSError:
                pass
            for conn in conns:
                try:
                    conn.send(b"X")  # a status line that never ends
                except OSError:
                    pass
        for conn in conns:
            conn.close()

    thread = threading.Thread(target=trickle, name="trickling-receiver", daemon=True)
    thread.start()
    outcomes: list[str] = []
    done = threading.Event()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/h"
    sender = WebhookSender(
        url, secret=None, on_outcome=lambda o: (outcomes.append(o), done.set()), try_timeout_s=0.5, backoff_s=(0.01,)
    )
    try:
        started = time.monotonic()
        sender.submit("scene.ended", b"{}")
        assert done.wait(10.0), "the sender was still held by the trickling receiver"
        assert outcomes == ["failed"] and time.monotonic() - started < 4.0
    finally:
        sender.close(grace_s=0)
        stop.set()
        thread.join(5.0)
        listener.close()
