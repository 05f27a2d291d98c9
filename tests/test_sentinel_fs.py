"""Sentinel, filesystem mode: naming, format completeness, mount detection, batches, journal, CLI."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from run_factory import POLICY, snapshot
from scene_telemetry.cli.main import main
from scene_telemetry.sentinel import (
    FsSentinel,
    GroupKey,
    Journal,
    image_size,
    is_complete,
    is_network_filesystem,
    parse_name,
)
from scene_telemetry.sentinel._mounts import filesystem_type
from scene_telemetry.telemetry import verify_marker, write_frames_with_marker
from scene_telemetry.telemetry._collect import collect_scene
from sentinel_helpers import (
    age,
    box,
    fail_first_marker_write,
    gif_bytes,
    mp4_bytes,
    png_bytes,
    running,
    wait_until,
    webp_bytes,
    write_batch,
    write_file,
)

QUIET = 0.3

pytestmark = pytest.mark.filterwarnings(
    # watchdog 7's inotify emitter warns when nested folders appear at once (mkdir -p); harmless, but the
    # suite's "warnings are errors" would kill its thread. The sentinel survives that too (it falls back to
    # polling), yet these tests are about batches, not that fallback.
    "ignore:Callback with id:RuntimeWarning"
)


def sentinel(out: Path, *, poll: bool = False, quiet: float = QUIET, state: Path | None = None) -> FsSentinel:
    journal = Journal.load(state or out / ".scene-telemetry-sentinel.json")
    return FsSentinel(out, journal, quiet_s=quiet, poll=poll, poll_interval_s=0.1)


def names(marker: Path) -> list[str]:
    return [f["Name"] for f in json.loads(marker.read_text("utf-8"))["Files"]]


# ---------------------------------------------------------------------------------------------- naming, formats


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("frame_00001_.png", ("frame", 1, "png")),
        ("my_clip_00012_.webp", ("my_clip", 12, "webp")),
        ("a_00001_00002_.png", ("a_00001", 2, "png")),
        ("vhs_00003.mp4", ("vhs", 3, "mp4")),
        ("vhs_00003-audio.mp4", ("vhs", 3, "mp4")),
        ("big_123456_.PNG", ("big", 123456, "png")),
    ],
)
def test_parse_counter_names(name: str, expected: tuple[str, int, str]) -> None:
    parsed = parse_name(name)
    assert parsed is not None and (parsed.prefix, parsed.counter, parsed.ext) == expected


@pytest.mark.parametrize(
    "name", ["frame.done", ".frame_00001_.png.abc.st-tmp", "frame_0001_.png", "notes_00001_.txt", "frame.png"]
)
def test_names_the_sentinel_ignores(name: str) -> None:
    assert parse_name(name) is None


def test_png_is_complete_only_with_iend(tmp_path: Path) -> None:
    data = png_bytes()
    write_file(tmp_path / "a.png", data)
    write_file(tmp_path / "b.png", data[:-1])
    write_file(tmp_path / "c.png", data[: len(data) // 2])
    assert is_complete(tmp_path / "a.png")
    assert not is_complete(tmp_path / "b.png")
    assert not is_complete(tmp_path / "c.png")
    assert not is_complete(tmp_path / "a.png", size=len(data) + 1), "a size other than the observed one"
    assert image_size(tmp_path / "a.png") == (8, 8)


def test_webp_riff_size_must_match(tmp_path: Path) -> None:
    data = webp_bytes()
    write_file(tmp_path / "a.webp", data)
    write_file(tmp_path / "b.webp", data[:-10])
    assert is_complete(tmp_path / "a.webp")
    assert not is_complete(tmp_path / "b.webp")
    assert image_size(tmp_path / "a.webp") == (16, 16)


def test_gif_needs_its_trailer(tmp_path: Path) -> None:
    data = gif_bytes()
    assert data.endswith(b"\x3b")
    write_file(tmp_path / "a.gif", data)
    write_file(tmp_path / "b.gif", data[:-1])
    assert is_complete(tmp_path / "a.gif") and not is_complete(tmp_path / "b.gif")


def test_mp4_boxes_must_chain_to_the_end_with_a_moov(tmp_path: Path) -> None:
    whole = mp4_bytes()
    write_file(tmp_path / "a.mp4", whole)
    write_file(tmp_path / "faststart.mp4", mp4_bytes(moov_last=False))
    write_file(tmp_path / "short.mp4", whole[:-5])
    write_file(tmp_path / "nomoov.mp4", whole[: len(whole) - len(box(b"moov", box(b"mvhd", b"\x00" * 100)))])
    streaming = box(b"ftyp", b"isom\x00\x00\x02\x00") + struct.pack(">I4s", 0, b"mdat") + b"\x00" * 32
    write_file(tmp_path / "streaming.mp4", streaming)
    large = box(b"ftyp", b"isom\x00\x00\x02\x00") + struct.pack(">I4sQ", 1, b"mdat", 16 + 8) + b"\x00" * 8
    write_file(tmp_path / "large.mp4", large + box(b"moov", b""))
    assert is_complete(tmp_path / "a.mp4") and is_complete(tmp_path / "faststart.mp4")
    assert is_complete(tmp_path / "large.mp4")
    for bad in ("short", "nomoov", "streaming"):
        assert not is_complete(tmp_path / f"{bad}.mp4"), bad


def test_mount_table_decides_network_filesystems(tmp_path: Path) -> None:
    table = "\n".join(
        [
            "/dev/sda1 / ext4 rw 0 0",
            "server:/export /mnt/nfs nfs4 rw 0 0",
            "//nas/share /mnt/smb\\040share cifs rw 0 0",
            "user@host:/data /mnt/ssh fuse.sshfs rw 0 0",
            "/dev/sdb1 /mnt/nfs/local ext4 rw 0 0",
        ]
    )
    assert filesystem_type("/mnt/nfs/renders", table) == "nfs4"
    assert is_network_filesystem("/mnt/nfs/renders", table)
    assert is_network_filesystem("/mnt/smb share/out", table)
    assert is_network_filesystem("/mnt/ssh/x", table)
    assert not is_network_filesystem("/mnt/nfs/local/out", table), "the longest mount point decides"
    assert not is_network_filesystem("/home/user", table)
    assert not is_network_filesystem("/mnt/nfsx", table)


# ---------------------------------------------------------------------------------------------- live batches


@pytest.mark.parametrize("poll", [False, True], ids=["events", "polling"])
def test_batches_in_parallel_folders_get_one_marker_each(output_dir: Path, poll: bool) -> None:
    service = sentinel(output_dir, poll=poll)
    with running(service):
        assert service.ready.wait(5)
        expected = {}
        for i in range(3):
            folder = output_dir / f"scene{i}" / "shots"
            expected[folder / "frame.done"] = write_batch(folder, "frame", 4 + i)
        for marker, files in expected.items():
            wait_until(marker.exists)
            body = verify_marker(marker)
            assert (body["Source"], body["FrameCount"], body["Subfolder"]) == (
                "sentinel",
                len(files),
                marker.parent.relative_to(output_dir).as_posix(),
            )
            assert names(marker) == files
            assert body["FilenamePrefix"] == f"{body['Subfolder']}/frame"
            assert body["Parameters"]["QuietSeconds"] == QUIET
    assert service.markers_written == 3


def test_a_trickling_writer_is_marked_only_after_its_last_byte(output_dir: Path) -> None:
    service = sentinel(output_dir)
    folder = output_dir / "trickle"
    data = png_bytes(side=64)
    with running(service):
        assert service.ready.wait(5)
        write_batch(folder, "frame", 2)
        # each pause is shorter than the quiet period, the whole write much longer
        write_file(folder / "frame_00003_.png", data, chunks=8, gap_s=QUIET / 3)
        marker = wait_until(lambda: (folder / "frame.done").exists() and folder / "frame.done")
        assert names(marker) == ["frame_00001_.png", "frame_00002_.png", "frame_00003_.png"]
        assert verify_marker(marker)["Files"][2]["Bytes"] == len(data)


def test_a_writer_paused_mid_file_longer_than_quiet_is_not_marked_until_closed(output_dir: Path) -> None:
    service = sentinel(output_dir)
    folder = output_dir / "paused"
    data = png_bytes(side=32)
    with running(service):
        assert service.ready.wait(5)
        write_batch(folder, "frame", 1)
        write_file(folder / "frame_00002_.png", data[: len(data) // 2])
        time.sleep(QUIET * 4)  # stable but not closed (no IEND): the batch must wait
        assert not (folder / "frame.done").exists()
        with open(folder / "frame_00002_.png", "ab") as f:
            f.write(data[len(data) // 2 :])
        wait_until((folder / "frame.done").exists)
        assert names(folder / "frame.done") == ["frame_00001_.png", "frame_00002_.png"]
        verify_marker(folder / "frame.done")


def test_a_later_batch_gets_a_fresh_marker_listing_only_itself(output_dir: Path) -> None:
    service = sentinel(output_dir)
    folder = output_dir / "clip"
    with running(service):
        assert service.ready.wait(5)
        first = write_batch(folder, "frame", 3)
        wait_until((folder / "frame.done").exists)
        assert names(folder / "frame.done") == first
        second = write_batch(folder, "frame", 2, start=4)
        wait_until(lambda: names(folder / "frame.done") == second)
        verify_marker(folder / "frame.done")


def test_webp_gif_and_video_batches(output_dir: Path) -> None:
    write_file(output_dir / "anim" / "clip_00001_.webp", webp_bytes())
    write_file(output_dir / "anim" / "loop_00001.gif", gif_bytes())
    write_file(output_dir / "anim" / "vid_00001.mp4", mp4_bytes())
    write_file(output_dir / "anim" / "vid_00001.png", png_bytes())
    age(list((output_dir / "anim").iterdir()))
    assert sentinel(output_dir).run(once=True) == 3
    assert names(output_dir / "anim" / "clip.done") == ["clip_00001_.webp"]
    assert names(output_dir / "anim" / "loop.done") == ["loop_00001.gif"]
    assert names(output_dir / "anim" / "vid.done") == ["vid_00001.mp4", "vid_00001.png"]
    assert verify_marker(output_dir / "anim" / "clip.done")["Width"] == 16


def test_write_done_marker_output_gets_no_second_marker(output_dir: Path) -> None:
    import numpy as np

    done = write_frames_with_marker(np.zeros((3, 4, 4, 3), np.float32), output_dir, "node/frame", workers=1)
    age([*done.frame_paths, done.marker_path])
    before = done.marker_path.stat().st_ino
    service = sentinel(output_dir)
    assert service.run(once=True) == 0
    assert done.marker_path.stat().st_ino == before
    assert verify_marker(done.marker_path)["Source"] == "node"
    assert service.journal.is_marked(GroupKey("node", "frame"), 3, done.frame_paths[-1].stat().st_mtime_ns)


# ---------------------------------------------------------------------------------------------- journal, restarts


def test_once_marks_what_is_pending_and_a_rerun_repeats_nothing(output_dir: Path) -> None:
    files = write_batch(output_dir / "a", "frame", 3)
    age([output_dir / "a" / n for n in files])
    assert sentinel(output_dir).run(once=True) == 1
    inode = (output_dir / "a" / "frame.done").stat().st_ino
    assert sentinel(output_dir).run(once=True) == 0
    assert (output_dir / "a" / "frame.done").stat().st_ino == inode
    state = json.loads((output_dir / ".scene-telemetry-sentinel.json").read_text("utf-8"))
    assert state["Groups"] == [
        {"Folder": "a", "Prefix": "frame", "Counter": 3, "MtimeNs": state["Groups"][0]["MtimeNs"]}
    ]


def test_crash_between_marker_and_journal_writes_no_second_marker(output_dir: Path) -> None:
    files = write_batch(output_dir / "a", "frame", 3)
    age([output_dir / "a" / n for n in files])
    assert sentinel(output_dir).run(once=True) == 1
    (output_dir / ".scene-telemetry-sentinel.json").unlink()  # as if killed before the journal write
    inode = (output_dir / "a" / "frame.done").stat().st_ino
    later = write_batch(output_dir / "a", "frame", 2, start=4)
    age([output_dir / "a" / n for n in later], 300)
    assert sentinel(output_dir).run(once=True) == 1
    assert names(output_dir / "a" / "frame.done") == later, "only the files no marker vouched for"
    assert (output_dir / "a" / "frame.done").stat().st_ino != inode
    assert sentinel(output_dir).run(once=True) == 0


def test_files_written_while_down_are_marked_at_start(output_dir: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    write_batch(output_dir / "a", "frame", 2)
    age(list((output_dir / "a").iterdir()))
    assert sentinel(output_dir, state=state).run(once=True) == 1
    later = write_batch(output_dir / "a", "frame", 2, start=3)
    age([output_dir / "a" / n for n in later], 60)
    service = sentinel(output_dir, state=state)
    with running(service):
        wait_until(lambda: names(output_dir / "a" / "frame.done") == later)
    assert not (output_dir / ".scene-telemetry-sentinel.json").exists(), "--state names the journal"


def test_a_deleted_and_restarted_counter_is_a_new_batch(output_dir: Path) -> None:
    old = write_batch(output_dir / "a", "frame", 2)
    age([output_dir / "a" / n for n in old], 600)
    assert sentinel(output_dir).run(once=True) == 1
    for name in old:
        (output_dir / "a" / name).unlink()
    (output_dir / "a" / "frame.done").unlink()
    again = write_batch(output_dir / "a", "frame", 1)
    age([output_dir / "a" / n for n in again], 60)
    assert sentinel(output_dir).run(once=True) == 1
    assert names(output_dir / "a" / "frame.done") == again


# ---------------------------------------------------------------------------------------------- consumers, CLI


def test_wait_and_validate_accept_a_sentinel_marker(output_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Frames without a marker, the sentinel's marker, then the collector's run folder: wait and validate pass."""
    folder = output_dir / "s01"
    write_batch(folder, "frame", 3, data=png_bytes(side=12))
    age(list(folder.iterdir()))
    assert main(["sentinel", "--output-dir", str(output_dir), "--once"]) == 0
    marker = folder / "frame.done"
    body = json.loads(marker.read_text("utf-8"))
    assert body["Source"] == "sentinel"
    assert main(["wait", str(folder), "--timeout", "1", "--json"]) == 0
    done = {"marker_path": str(marker), "output_dir": str(output_dir), "subfolder": "s01", "body": body}
    _, files = collect_scene(
        marker=done,
        scene_id="s01",
        gpu_before=snapshot("before", 1000, 80559),
        gpu_after=snapshot("after", 3000, 78559),
        policy=POLICY,
        prompt_id=None,
        queue_start_ms=None,
        comfyui_version=None,
    )
    capsys.readouterr()
    code = main(["validate", str(files.run_dir), "--output-dir", str(output_dir), "--problems"])
    assert code == 0, capsys.readouterr().out


def test_cli_refuses_a_missing_output_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sentinel", "--output-dir", str(tmp_path / "nope"), "--once"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    assert main(["sentinel", "--once"]) == 2


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"Document": "other"}',
        b"\xff\xfe",
        b'{"Document": "scene-telemetry-sentinel-state", "Version": 1, "Groups": [{"Folder": 1}]}',
    ],
)
def test_cli_refuses_a_damaged_state_file_in_one_line(
    output_dir: Path, tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.json"
    state.write_bytes(content)
    assert main(["sentinel", "--output-dir", str(output_dir), "--state", str(state), "--once"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("scene-telemetry: error:") and err.count("\n") == 1
    assert state.read_bytes() == content, "a damaged journal is left for the user to inspect"


def test_cli_quiet_seconds_must_be_a_number(output_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["sentinel", "--output-dir", str(output_dir), "--quiet-seconds", "nan"])
    assert exc.value.code == 2
    assert "quiet-seconds" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- degraded watching


def test_a_network_filesystem_is_polled(output_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("scene_telemetry.sentinel._fs.is_network_filesystem", lambda folder: True)
    journal = Journal.load(output_dir / ".scene-telemetry-sentinel.json")
    service = FsSentinel(output_dir, journal, quiet_s=QUIET)
    assert service.poll and service.poll_interval_s == max(0.25, QUIET / 2)
    with running(service):
        assert service.ready.wait(5)
        assert service._observer is None
        files = write_batch(output_dir / "nfs", "frame", 2)
        wait_until((output_dir / "nfs" / "frame.done").exists)
    assert names(output_dir / "nfs" / "frame.done") == files
    assert verify_marker(output_dir / "nfs" / "frame.done")["Parameters"]["Polling"] is True


def test_no_inotify_watches_left_falls_back_to_polling(output_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from watchdog.observers import Observer

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(Observer, "schedule", refuse)
    service = sentinel(output_dir)
    with running(service):
        assert service.ready.wait(5)
        assert service.poll
        write_batch(output_dir / "limit", "frame", 2)
        wait_until((output_dir / "limit" / "frame.done").exists)


def test_a_dead_watcher_thread_falls_back_to_polling(output_dir: Path) -> None:
    service = sentinel(output_dir)
    with running(service):
        assert service.ready.wait(5)
        observer = service._observer
        assert observer is not None
        for emitter in list(observer.emitters):
            emitter.stop()
            emitter.join(5)
        wait_until(lambda: service.poll, timeout=5)
        files = write_batch(output_dir / "after", "frame", 3)
        wait_until((output_dir / "after" / "frame.done").exists)
    assert names(output_dir / "after" / "frame.done") == files


def test_a_marker_that_cannot_be_written_is_retried_not_fatal(
    output_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from scene_telemetry.sentinel import _fs

    calls = fail_first_marker_write(monkeypatch)
    monkeypatch.setattr(_fs, "RETRY_AFTER_ERROR_S", 0.2)
    files = write_batch(output_dir / "ro", "frame", 2)
    service = sentinel(output_dir)
    with running(service):
        wait_until((output_dir / "ro" / "frame.done").exists)
    assert len(calls) == 2 and names(output_dir / "ro" / "frame.done") == files
    assert "cannot mark ro/frame yet" in caplog.text and "Permission denied" in caplog.text


def test_cli_refuses_an_unwritable_state_file_in_one_line(
    output_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "no such folder" / "state.json"
    assert main(["sentinel", "--output-dir", str(output_dir), "--state", str(state), "--once"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write the sentinel state" in err and "--state" in err


def test_a_journal_that_cannot_be_saved_is_retried_not_fatal(
    output_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal.load(output_dir / ".scene-telemetry-sentinel.json")
    files = write_batch(output_dir / "a", "frame", 2)
    age([output_dir / "a" / n for n in files])
    journal.path = output_dir / "gone" / "state.json"  # its folder does not exist: every save fails
    service = FsSentinel(output_dir, journal, quiet_s=QUIET)
    assert service.run(once=True) == 1
    assert caplog.text.count("cannot write the sentinel state") == 1, "logged once per streak, not per round"
    assert journal.dirty, "still to be written"
    journal.path = output_dir / "state.json"
    assert journal.try_save() and json.loads(journal.path.read_text())["Groups"][0]["Counter"] == 2
