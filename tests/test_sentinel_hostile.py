"""Sentinel, server mode, against a hostile or broken server: every malformed reply is an outage, never a crash.

The replies are handed to the sentinel in place of the HTTP transport (the transport's own hostile-input
handling, non-JSON and non-object bodies, is tested with the client); what is tested here is what the
sentinel does with a well-formed JSON object of the wrong shape.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import load_transcript
from scene_telemetry.sentinel import Journal, ServerSentinel, from_history, from_job, node_batches


def hostile_sentinel(out: Path, jobs_reply: dict[str, Any]) -> ServerSentinel:
    service = ServerSentinel("http://127.0.0.1:9", out, Journal.load(out / ".scene-telemetry-sentinel.json"))
    service.client.system_stats = lambda **_: {"system": {"comfyui_version": "0.8.0"}}  # type: ignore[method-assign]
    service.client.jobs = lambda **_: jobs_reply  # type: ignore[method-assign]
    service.client.job = lambda prompt_id: {"id": prompt_id, "status": "completed", "outputs": {}}  # type: ignore[method-assign]
    return service


@pytest.mark.parametrize(
    "reply",
    [
        {"jobs": 5},
        {"jobs": "abc"},
        {"jobs": {"id": "x"}},
    ],
    ids=["jobs-int", "jobs-str", "jobs-object"],
)
def test_a_jobs_list_of_the_wrong_type_is_an_outage_not_a_crash(
    output_dir: Path, reply: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    service = hostile_sentinel(output_dir, reply)
    assert service._sync() is False
    assert "expected a list" in caplog.text


@pytest.mark.parametrize("pagination", [["x"], "yes", 7, {"has_more": "false"}], ids=["list", "str", "int", "str-flag"])
def test_a_pagination_of_the_wrong_type_ends_the_listing(output_dir: Path, pagination: Any) -> None:
    service = hostile_sentinel(output_dir, {"jobs": [{"id": "p1"}], "pagination": pagination})
    assert service._sync() is True
    assert service.journal.prompts.keys() >= {"p1"}


@pytest.mark.parametrize("created", [10**400, float("nan"), float("inf"), True, "1"])
def test_a_create_time_out_of_range_is_zero(created: Any) -> None:
    assert from_job({"id": "p", "status": "completed", "create_time": created}).create_time == 0.0  # type: ignore[union-attr]
    data = load_transcript("success")
    prompt_id = data["prompt_reply"]["prompt_id"]
    entry = copy.deepcopy(data["history"][prompt_id])
    entry["prompt"][3]["create_time"] = created
    assert from_history(prompt_id, entry).create_time == 0.0  # type: ignore[union-attr]


def test_a_subfolder_that_is_not_a_string_is_skipped() -> None:
    prompt = from_job(
        {
            "id": "p",
            "status": "completed",
            "workflow": {"prompt": {"9": {"class_type": "SaveImage"}}},
            "outputs": {
                "9": {
                    "images": [
                        {"filename": "a_00001_.png", "subfolder": ["x"], "type": "output"},
                        {"filename": "b_00001_.png", "subfolder": {"../": 1}, "type": "output"},
                        {"filename": "c_00001_.png", "subfolder": "ok", "type": "output"},
                    ]
                }
            },
        }
    )
    assert prompt is not None
    batches, skipped = node_batches(prompt)
    assert [b.key.folder for b in batches] == ["ok"]
    assert len(skipped) == 2 and all("not a string" in line for line in skipped)


def test_names_with_newlines_are_grouped_and_a_trailing_newline_is_not_a_png(
    output_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scene_telemetry.cli.main import main
    from scene_telemetry.sentinel._naming import CounterName, parse_name
    from scene_telemetry.telemetry import read_marker

    assert parse_name("two\nlines_00001_.png") == CounterName("two\nlines", 1, "png")
    assert parse_name("x_00001_.png\n") is None
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    (output_dir / "two\nlines_00001_.png").write_bytes(png)
    old = 1_000_000_000
    os.utime(output_dir / "two\nlines_00001_.png", (old, old))
    assert main(["sentinel", "--output-dir", str(output_dir), "--once", "--quiet-seconds", "0"]) == 0
    marker = read_marker(output_dir / "two\nlines.done")
    assert [f["Name"] for f in marker["Files"]] == ["two\nlines_00001_.png"]


def test_prompt_ids_are_the_ones_asked_for_and_never_huge(output_dir: Path) -> None:
    """A server answering with megabyte ids (or another id than asked for) cannot grow the journal past the size
    the next start reads, nor make a prompt look new on every poll."""
    huge = "h" * 100_000
    service = hostile_sentinel(output_dir, {"jobs": [{"id": huge}, {"id": "p1"}]})
    asked: list[str] = []

    def job(prompt_id: str) -> dict[str, Any]:
        asked.append(prompt_id)
        return {"id": "x" * 100_000, "status": "failed"}

    service.client.job = job  # type: ignore[method-assign]
    assert service._sync() is True
    assert asked == ["p1"]
    assert list(service.journal.prompts) == ["p1"]
    assert service._sync() is True and asked == ["p1"]  # handled: not fetched again
    assert (output_dir / ".scene-telemetry-sentinel.json").stat().st_size < 10_000


def test_a_huge_status_is_cut_before_it_reaches_the_journal(output_dir: Path) -> None:
    service = hostile_sentinel(output_dir, {"jobs": [{"id": f"p{i}"} for i in range(20)]})
    service.client.job = lambda prompt_id: {"id": prompt_id, "status": "s" * 5_000_000}  # type: ignore[method-assign]
    assert service._sync() is True
    assert len(service.journal.prompts) == 20
    assert (output_dir / ".scene-telemetry-sentinel.json").stat().st_size < 10_000


# ---------------------------------------------------------------------------------------------- install


def cmd_runs(line: str) -> str | None:
    """What cmd.exe runs for one line of a batch file; None where it would expand a variable or split the line."""
    expanded, i = [], 0
    while i < len(line):  # phase 1: %-expansion (inside quotes too)
        if line[i] == "%":
            if line[i + 1 : i + 2] != "%":
                return None
            i += 1
        expanded.append(line[i])
        i += 1
    ran, quoted, escaped = [], False, False
    for char in expanded:  # phase 2: quotes toggle, ^ escapes, & | < > split outside quotes
        if escaped:
            ran.append(char)
            escaped = False
        elif char == '"':
            quoted = not quoted
            ran.append(char)
        elif char == "^" and not quoted:
            escaped = True
        elif char in "&|<>" and not quoted:
            return None
        else:
            ran.append(char)
    return "".join(ran)


@pytest.mark.parametrize("folder", ["R&D out", "100% done", "a (b) | c", "plain"])
def test_nssm_script_runs_exactly_the_arguments_cmd_would_otherwise_split(folder: str) -> None:
    import subprocess

    from scene_telemetry.sentinel._install import SERVICE_NAME, nssm_commands

    command = ["C:\\Py 3%\\python.exe", "-m", "scene_telemetry.cli", "sentinel", "--output-dir", f"C:\\{folder}"]
    lines = nssm_commands(command).text.split("\r\n")
    arguments = subprocess.list2cmdline(command[1:])
    [install] = [line for line in lines if line.startswith(f"nssm install {SERVICE_NAME} ")]
    [params] = [line for line in lines if " AppParameters " in line]
    assert cmd_runs(install) == f"nssm install {SERVICE_NAME} {subprocess.list2cmdline([command[0]])}"
    assert cmd_runs(params) == f"nssm set {SERVICE_NAME} AppParameters {subprocess.list2cmdline([arguments])}"


@pytest.mark.parametrize("kind", ["--systemd", "--launchd", "--windows-task", "--nssm"])
def test_install_refuses_a_line_break_in_the_arguments(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from scene_telemetry.cli.main import main

    folder = tmp_path / "out\nExecStartPre=touch pwned"
    folder.mkdir()
    assert main(["sentinel", "install", kind, "--print", "--", "--output-dir", str(folder)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "line break" in err


def test_a_flood_of_status_messages_is_not_a_flood_of_listings(output_dir: Path) -> None:
    import time

    from fake_comfy import FakeComfy, Scenario
    from sentinel_helpers import running

    with FakeComfy(Scenario(write_marker=False), output_dir=output_dir) as fake:
        service = ServerSentinel(fake.url, output_dir, Journal.load(output_dir / "state.json"), poll_interval_s=30)
        with running(service):
            assert service.ready.wait(10)
            time.sleep(0.3)
            before = sum(1 for _, path in fake.requests if path.startswith("/api/jobs"))
            start = time.monotonic()
            while time.monotonic() - start < 1.0:
                fake._call(fake._broadcast_status())
            time.sleep(0.3)
            listings = sum(1 for _, path in fake.requests if path.startswith("/api/jobs")) - before
    assert 1 <= listings <= 12, listings  # about one per 0.2 s (1,200 a second before)


@pytest.mark.parametrize("counter", ["Infinity", "NaN", "1e400", '"x"', "[1]"])
def test_a_state_journal_with_an_impossible_counter_is_one_line(
    output_dir: Path, counter: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from scene_telemetry.cli.main import main

    state = output_dir / ".scene-telemetry-sentinel.json"
    state.write_text(
        '{"Document":"scene-telemetry-sentinel-state","Version":1,'
        f'"Groups":[{{"Folder":"","Prefix":"x","Counter":{counter},"MtimeNs":1}}],"Prompts":[]}}'
    )
    before = state.read_bytes()
    assert main(["sentinel", "--output-dir", str(output_dir), "--once"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sentinel state has a malformed entry" in err
    assert state.read_bytes() == before  # nothing lost: the damaged journal is left for the user to look at


def test_names_that_are_not_utf8_are_left_alone_not_a_crash(
    output_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A marker is UTF-8 JSON: a file or folder whose name is not valid UTF-8 cannot be listed in one."""
    from scene_telemetry.cli.main import main

    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    bad_folder = os.fsdecode(b"dir\xff")
    (output_dir / "s").mkdir()
    (output_dir / bad_folder).mkdir()
    for path in (output_dir / "s" / os.fsdecode(b"bad\xff_00001_.png"), output_dir / bad_folder / "x_00001_.png"):
        path.write_bytes(png)
        os.utime(path, (1_000_000_000, 1_000_000_000))
    (output_dir / "s" / "ok_00001_.png").write_bytes(png)
    os.utime(output_dir / "s" / "ok_00001_.png", (1_000_000_000, 1_000_000_000))
    assert main(["sentinel", "--output-dir", str(output_dir), "--once", "--quiet-seconds", "0"]) == 0
    assert sorted(p.name for p in output_dir.rglob("*.done")) == ["ok.done"]
    prompt = from_job(
        {
            "id": "p",
            "status": "completed",
            "outputs": {"9": {"images": [{"filename": "bad\udcff_00001_.png", "subfolder": "", "type": "output"}]}},
        }
    )
    assert prompt is not None
    batches, skipped = node_batches(prompt)
    assert batches == [] and "not valid UTF-8" in skipped[0]
