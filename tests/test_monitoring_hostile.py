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
