"""The sentinel as a real process: clean shutdown on SIGTERM/SIGINT, and the SIGKILL/restart loop."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from scene_telemetry.telemetry import verify_marker
from sentinel_helpers import reaped, start_sentinel, stop_timed, wait_until, write_batch

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals (SIGKILL, SIGTERM delivery) are tested on POSIX")

QUIET = 0.3


def start(output_dir: Path, *extra: str, log: Path) -> subprocess.Popen[bytes]:
    return start_sentinel(output_dir, log, "--quiet-seconds", str(QUIET), *extra)


def wait_for_log(log: Path, text: str, count: int = 1, timeout: float = 20.0) -> None:
    wait_until(lambda: log.read_text("utf-8", "replace").count(text) >= count, timeout=timeout)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_sentinel_cleanly_within_2_s(output_dir: Path, tmp_path: Path, sig: signal.Signals) -> None:
    log = tmp_path / "sentinel.log"
    with reaped(start(output_dir, log=log)) as process:
        wait_for_log(log, "sentinel watching")
        write_batch(output_dir / "a", "frame", 2)
        wait_until((output_dir / "a" / "frame.done").exists)
        code, elapsed = stop_timed(process, sig, timeout=5)
    assert code == 0, log.read_text()
    assert elapsed < 2.0, f"took {elapsed:.2f} s to stop"
    text = log.read_text("utf-8")
    assert text.count("marker written:") == 1 and "Traceback" not in text
    assert json.loads((output_dir / ".scene-telemetry-sentinel.json").read_text())["Groups"][0]["Counter"] == 2


def test_sigkill_at_random_points_leaves_exactly_one_marker_per_batch(output_dir: Path, tmp_path: Path) -> None:
    """Batches arrive while the sentinel is killed (SIGKILL) and restarted at random moments.

    Every batch must end with exactly one marker listing exactly its files, and no marker may be
    written twice (an atomic rewrite would change the marker's inode).
    """
    rng = random.Random(1234)
    log = tmp_path / "sentinel.log"
    batches: dict[Path, list[str]] = {}
    first_inode: dict[Path, int] = {}

    def note_markers() -> None:
        for marker in batches:
            try:
                inode = marker.stat().st_ino
            except FileNotFoundError:
                continue
            assert first_inode.setdefault(marker, inode) == inode, f"{marker} was written twice"

    process = start(output_dir, log=log)
    try:
        for round_ in range(12):
            for b in range(rng.randint(1, 3)):
                folder = output_dir / f"r{round_:02}" / f"b{b}"
                batches[folder / "frame.done"] = write_batch(folder, "frame", rng.randint(1, 5))
            time.sleep(rng.uniform(0.0, QUIET * 2.5))  # sometimes before the quiet period ends, sometimes after
            note_markers()
            process.kill()
            process.wait()
            note_markers()
            process = start(output_dir, log=log)
            time.sleep(rng.uniform(0.0, 0.3))
        wait_until(lambda: all(m.exists() for m in batches), timeout=30)
        time.sleep(QUIET * 3)  # a repeat would come now
        note_markers()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    for marker, files in batches.items():
        body = verify_marker(marker)
        assert [f["Name"] for f in body["Files"]] == files
        assert body["Source"] == "sentinel"
    assert len(list(output_dir.rglob("*.done"))) == len(batches)
    note_markers()
