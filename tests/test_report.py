"""``scene-telemetry report``: what the page says for each kind of folder, exit codes, escaping, links, caps.

The page is checked in a real browser in test_report_browser.py; here the HTML is
parsed with the standard library's parser.
"""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from fake_comfy import FakeComfy, Scenario
from report_runs import FAILURE_DETAIL, Layout, make_runner_run, make_sentinel_folder, write_unchecked
from run_factory import make_run
from scene_telemetry.cli.main import main
from scene_telemetry.report import REPORT_NAME, load_run, write_report
from scene_telemetry.report._load import SceneRow, server_label
from scene_telemetry.report._sheet import MAX_SHEET_SCENES, pick_frames, pick_scenes

HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">&amp;"\''


class _Page(HTMLParser):
    """Tags, links, scripts and the scenes table's rows of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.links: list[str] = []
        self.event_attrs: list[str] = []
        self.rows: list[list[str]] = []
        self._in_table = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        self.event_attrs += [name for name, _ in attrs if name.startswith("on")]
        if tag == "script":
            self.scripts.append(named)
        if tag == "a" and named.get("href"):
            self.links.append(str(named["href"]))
        if tag == "table" and named.get("id") == "scene-table":
            self._in_table = True
        if self._in_table and tag == "tr":
            self.rows.append([])
        if self._in_table and tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_table = False
        if tag == "td" and self._cell is not None and self.rows:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse(path: Path) -> tuple[str, _Page]:
    text = path.read_text("utf-8")
    page = _Page()
    page.feed(text)
    return text, page


def report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["report", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_editor_run_passes_and_the_page_is_self_contained(tmp_path, capsys):
    run = make_run(tmp_path / "output")
    code, out, err = report(capsys, str(run.run_dir))
    page_path = run.run_dir / REPORT_NAME
    assert (code, err) == (0, "")
    assert f"report: {page_path}" in out
    text, page = parse(page_path)
    assert 'Validator: <span class="word">PASSED</span>' in text
    # offline: every script is inline, no stylesheet or image is fetched from anywhere
    assert [s.get("src") for s in page.scripts] == [None, None, None]
    assert "<link" not in text and 'src="http' not in text and "url(http" not in text
    assert "uPlot" in text
    assert [row[1] for row in page.rows if row] == ["s01"]
    assert "editor run" in text
    # the contact sheet embeds the frames, downscaled to JPEG
    assert text.count('src="data:image/jpeg;base64,') == 3


def test_runner_run_table_shows_exit_reasons_attempts_memory_and_failure_detail(tmp_path, capsys):
    run_dir = make_runner_run(tmp_path / "run", Layout(scenes=8, fail_every=4))
    code, _, _ = report(capsys, str(run_dir))
    assert code == 0  # failed scenes are recorded faithfully: the validator passes
    text, page = parse(run_dir / REPORT_NAME)
    rows = [r for r in page.rows if r]
    assert len(rows) == 8
    exits = {r[1]: r[2] for r in rows}
    assert exits["scene-0003"] == "executionError" and exits["scene-0000"] == "success"
    failed = next(r for r in rows if r[1] == "scene-0003")
    assert failed[3] == "2" and failed[-1] == FAILURE_DETAIL
    assert rows[0][6] == "9,000" and rows[0][9] == "81,559"  # VRAM before, device total
    assert rows[0][8] == "—"  # no VramPeakMB recorded
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', text).group(1))
    assert data["exits"] == {"names": ["success", "executionError"], "counts": [6, 2], "ok": [True, False]}
    assert data["memory"]["kind"] == "VRAM" and data["timeline"] is None
    assert "history max wait 600 s" in text


def test_farm_run_shows_servers_peak_and_a_timeline(tmp_path):
    run_dir = make_runner_run(tmp_path / "run", Layout(scenes=9, servers=3, peak=True))
    result = write_report(run_dir)
    view = result.view
    assert view.kind == "farm run"
    assert {s.server for s in view.scenes} == {f"http://gpu-{i}.farm.local:8188" for i in range(3)}
    assert view.scenes[0].server_detail == "srv-000000000000 · cuda:0 NVIDIA H100 80GB HBM3 (box 0)"
    assert all(s.vram_peak is not None and s.vram_peak > (s.vram_after or 0) for s in view.scenes)
    text = result.path.read_text("utf-8")
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', text).group(1))
    assert data["timeline"]["servers"] == [f"http://gpu-{i}.farm.local:8188" for i in range(3)]
    assert len(data["timeline"]["start"]) == 9
    assert 'id="plot-timeline"' in text
    assert result.ok, result.validation.render_text(problems_only=True)  # the farm's fields are contract 1.1


def test_every_value_from_the_folder_is_escaped(tmp_path, capsys):
    run_dir = make_runner_run(tmp_path / "run", Layout(scenes=2, fail_every=2))
    metadata = json.loads((run_dir / "artifact-metadata.json").read_text("utf-8"))
    metadata["RunId"] = HOSTILE
    metadata["Scenes"][1].update(SceneId=HOSTILE, ExitDetail=HOSTILE, HistoryExitReason=HOSTILE)
    write_unchecked(run_dir, metadata)
    code, _, _ = report(capsys, str(run_dir))
    assert code == 1  # HistoryExitReason is not a contract value
    text, page = parse(run_dir / REPORT_NAME)
    assert text.count("<script") == 4  # the data block, uPlot, our script and nothing else
    assert "<img src=x" not in text and page.event_attrs == []
    row = next(r for r in page.rows if r and r[1] == HOSTILE)  # shown as text, intact
    assert row[2] == HOSTILE and row[-1] == HOSTILE
    block = re.search(r'id="report-data">(.*?)</script>', text, re.S).group(1)
    assert "<" not in block and json.loads(block)["ids"][1] == HOSTILE


def test_broken_metadata_lists_scenes_from_the_telemetry_files_and_says_so(tmp_path, capsys):
    run_dir = make_runner_run(tmp_path / "run", Layout(scenes=3))
    (run_dir / "artifact-metadata.json").write_text('{"Scenes": [', "utf-8")
    code, out, err = report(capsys, str(run_dir))
    assert code == 1 and err == ""
    text, page = parse(run_dir / REPORT_NAME)
    assert len([r for r in page.rows if r]) == 3
    assert "artifact-metadata.json: malformed JSON at line 1" in text
    assert "scenes listed from 3 readable &lt;scene&gt;.telemetry.json file(s) instead" in text
    assert "FAILED" in text or "UNREADABLE" in text


def test_missing_telemetry_file_and_frame_are_named(tmp_path, capsys):
    run_dir = make_runner_run(tmp_path / "run", Layout(scenes=3))
    (run_dir / "scene-0001.telemetry.json").unlink()
    (run_dir / "scene-0002" / "frame_00002_.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code, _, _ = report(capsys, str(run_dir))
    assert code == 1
    text, _ = parse(run_dir / REPORT_NAME)
    assert "telemetry file is missing" in text
    assert "unreadable: " in text  # the broken frame's thumbnail
    assert "frame_00002_.png" in text


def test_sentinel_folder_reports_markers_without_telemetry(tmp_path, capsys):
    folder = make_sentinel_folder(tmp_path / "out", scenes=2)
    code, out, err = report(capsys, str(folder))
    assert code == 1 and err == ""  # the validator fails: there is no metadata
    text, page = parse(folder / REPORT_NAME)
    rows = [r for r in page.rows if r]
    assert [r[1] for r in rows] == ["shot00/ComfyUI", "shot01/ComfyUI"]
    assert {r[-2] for r in rows} == {"sentinel"}
    assert "no telemetry: durations, exit reasons and memory were not recorded" in text
    assert "artifact-metadata.json: file is missing" in text
    assert text.count('src="data:image/jpeg;base64,') == 6


@pytest.mark.parametrize("make", ["empty", "absent", "garbage", "folder"])
def test_nothing_readable_is_one_line_and_exit_2(tmp_path, capsys, make):
    folder = tmp_path / "run"
    if make != "absent":
        folder.mkdir()
    if make == "garbage":
        (folder / "artifact-metadata.json").write_bytes(b"\xff\xfe\x00garbage")
        (folder / "x.done").write_text("not json", "utf-8")
    if make == "folder":  # unreadable: a folder where the metadata file should be
        (folder / "artifact-metadata.json").mkdir()
    code, out, err = report(capsys, str(folder))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("scene-telemetry: error: ")
    if make == "folder":
        assert "artifact-metadata.json: is a folder, not a file" in err
    assert not (folder / REPORT_NAME).exists()


def test_metadata_with_wrong_types_still_renders(tmp_path, capsys):
    run_dir = make_runner_run(tmp_path / "run", Layout(scenes=2))
    metadata = json.loads((run_dir / "artifact-metadata.json").read_text("utf-8"))
    metadata["Scenes"][0].update(DurationSeconds="slow", GPU=None, System=[1], Frames={"Count": "x"}, QueueStart=5)
    metadata["Scenes"].append("not a scene")
    (run_dir / "artifact-metadata.json").write_text(json.dumps(metadata), "utf-8")
    code, _, err = report(capsys, str(run_dir))
    assert code == 1 and err == ""
    text, page = parse(run_dir / REPORT_NAME)
    assert len([r for r in page.rows if r]) == 2
    assert "1 scene entry(ies) without a SceneId" in text


def test_unwritable_output_is_one_line_and_exit_2(tmp_path, capsys):
    run = make_run(tmp_path / "output")
    target = tmp_path / "no" / "such" / "dir" / "r.html"
    code, out, err = report(capsys, str(run.run_dir), "-o", str(target))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot write the report" in err
    assert f"({target})" in err and "st-tmp" not in err  # the page's path, not the temporary file's


def test_links_resolve_from_wherever_the_page_is_written(tmp_path, capsys):
    run_dir = make_runner_run(tmp_path / "run", Layout(scenes=3))
    elsewhere = tmp_path / "pages" / "today.html"
    elsewhere.parent.mkdir()
    code, _, _ = report(capsys, str(run_dir), "-o", str(elsewhere))
    assert code == 0 and not (run_dir / REPORT_NAME).exists()
    _, page = parse(elsewhere)
    targets = [elsewhere.parent / unquote(link) for link in page.links]
    names = {t.name for t in targets}
    assert {"artifact-metadata.json", "run-summary.txt", "scene-0000.telemetry.json", "frame.done"} <= names
    assert all(t.is_file() for t in targets), [t for t in targets if not t.is_file()]


def test_output_dir_finds_markers_of_a_headless_run(tmp_path, capsys):
    output = tmp_path / "comfy-output"
    make_runner_run(output, Layout(scenes=2))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("artifact-metadata.json", "run-summary.txt", "scene-0000.telemetry.json", "scene-0001.telemetry.json"):
        (run_dir / name).write_bytes((output / name).read_bytes())
    without = load_run(run_dir)
    assert [s.marker_path for s in without.scenes] == [None, None]
    assert any("2 scene marker(s) not found below the run folder" in m and "--output-dir" in m for m in without.missing)
    code, _, _ = report(capsys, str(run_dir), "--output-dir", str(output))
    assert code == 0
    assert [s.marker_source for s in load_run(run_dir, output_dir=output).scenes] == ["node", "node"]


def test_contact_sheet_is_capped_and_spread_over_the_run():
    rows = [SceneRow(i, f"s{i}", marker_path=Path(f"/x/{i}.done"), marker_files=["a"]) for i in range(1000)]
    rows[5].marker_files = []  # a scene without frames is never picked
    picked, total = pick_scenes(rows)
    assert total == 999 and len(picked) == MAX_SHEET_SCENES
    assert picked[0].index == 0 and picked[-1].index == 999
    assert len({p.index for p in picked}) == MAX_SHEET_SCENES
    assert pick_frames(["a", "b", "c", "d"]) == [("first", "a"), ("middle", "b"), ("last", "d")]
    assert pick_frames(["a"]) == [("first", "a")]
    assert pick_frames(["a", "b"]) == [("first", "a"), ("last", "b")]


def test_marker_outside_its_folder_is_not_read(tmp_path, capsys):
    run_dir = make_runner_run(tmp_path / "run", Layout(scenes=1))
    secret = tmp_path / "secret.png"
    secret.write_bytes((run_dir / "scene-0000" / "frame_00001_.png").read_bytes())
    link = run_dir / "scene-0000" / "frame_00001_.png"
    link.unlink()
    link.symlink_to(secret)
    code, _, _ = report(capsys, str(run_dir))
    text, _ = parse(run_dir / REPORT_NAME)
    assert "outside the marker&#x27;s folder: not shown" in text
    assert text.count('src="data:image/jpeg;base64,') == 2


RUN_WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 3, "color": 0}},
    "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": 1, "strength": 0.5}},
    "3": {
        "class_type": "SceneTelemetry_WriteDoneMarker",
        "inputs": {"images": ["2", 0], "filename_prefix": "x/frame", "scene_id": ""},
    },
}


def test_run_with_report_writes_the_page_of_the_finished_run(tmp_path, output_dir, capsys):
    (tmp_path / "wf.json").write_text(json.dumps(RUN_WORKFLOW))
    (tmp_path / "scenes.yaml").write_text("- id: a\n  seed: 3\n- id: b\n  seed: 4\n")
    (tmp_path / "map.json").write_text(json.dumps({"seed": "id:2.seed"}))
    argv = ["run", str(tmp_path / "wf.json"), "--scenes", str(tmp_path / "scenes.yaml")]
    argv += ["--mapping", str(tmp_path / "map.json"), "--out", str(tmp_path / "run"), "--no-gpu", "--fast-iteration"]
    with FakeComfy([Scenario(), Scenario()], output_dir=output_dir) as fake:
        code = main([*argv, "--server", fake.url, "--comfy-output-dir", str(output_dir), "--report", "--json"])
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert code == 0 and result["report"] == str(tmp_path / "run" / REPORT_NAME)
    text, page = parse(tmp_path / "run" / REPORT_NAME)
    rows = [r for r in page.rows if r]
    assert [(r[1], r[2], r[-2]) for r in rows] == [("a", "success", "node"), ("b", "success", "node")]
    assert 'Validator: <span class="word">PASSED</span>' in text


def test_server_label_reads_the_farm_fields_defensively():
    assert server_label({}) is None
    assert server_label({"Server": "http://a:8188"}) == "http://a:8188"
    assert server_label({"Server": {"Url": "http://a:8188", "InstanceId": "gpu-1"}}) == "http://a:8188"
    assert server_label({"ServerUrl": "http://a:8188", "ServerInstanceId": "srv-1"}) == "http://a:8188"
    assert server_label({"ServerUrl": None, "ServerInstanceId": "srv-1"}) == "srv-1"
    assert server_label({"Server": 5, "Worker": {"Name": "w", "Url": None}}) == "w"
    assert server_label({"Server": {"Url": ""}}) is None


def test_output_must_be_an_html_file_so_run_data_is_never_overwritten(tmp_path, capsys):
    run = make_run(tmp_path / "output")
    before = run.metadata_path.read_bytes()
    code, out, err = report(capsys, str(run.run_dir), "-o", str(run.metadata_path))
    assert code == 2 and out == "" and "must end in .html" in err and len(err.strip().splitlines()) == 1
    assert run.metadata_path.read_bytes() == before


def test_folder_marked_by_the_real_sentinel(tmp_path, capsys):
    from PIL import Image

    shot = tmp_path / "out" / "shotA"
    shot.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (64, 36), (60 * i, 100, 50)).save(shot / f"ComfyUI_{i + 1:05d}_.png")
    assert main(["sentinel", "--output-dir", str(tmp_path / "out"), "--once", "--quiet-seconds", "0.1"]) == 0
    assert (shot / "ComfyUI.done").is_file()
    capsys.readouterr()
    code, out, err = report(capsys, str(tmp_path / "out"))
    assert code == 1 and err == ""
    text, page = parse(tmp_path / "out" / REPORT_NAME)
    assert [(r[1], r[-2]) for r in page.rows if r] == [("shotA/ComfyUI", "sentinel")]
    assert text.count('src="data:image/jpeg;base64,') == 3


def test_a_huge_exit_detail_is_cut_in_the_table(tmp_path, capsys):
    run_dir = make_runner_run(tmp_path / "run", Layout(scenes=2, fail_every=2))
    metadata = json.loads((run_dir / "artifact-metadata.json").read_text("utf-8"))
    metadata["Scenes"][1]["ExitDetail"] = "RuntimeError: " + "x" * 200_000
    write_unchecked(run_dir, metadata)
    report(capsys, str(run_dir))
    text, page = parse(run_dir / REPORT_NAME)
    detail = next(r for r in page.rows if r and r[1] == "scene-0001")[-1]
    assert len(detail) == 300 and detail.endswith("…")
    assert text.count("x" * 2100) == 0  # nowhere on the page in full (the tooltip holds 2,000 characters)


def test_farm_run_with_report_shows_one_lane_per_server(tmp_path, capsys):
    (tmp_path / "wf.json").write_text(json.dumps(RUN_WORKFLOW))
    (tmp_path / "scenes.json").write_text(json.dumps([{"id": f"s{i}", "seed": i} for i in range(4)]))
    (tmp_path / "map.json").write_text(json.dumps({"seed": "id:2.seed"}))
    argv = ["run", str(tmp_path / "wf.json"), "--scenes", str(tmp_path / "scenes.json")]
    argv += ["--mapping", str(tmp_path / "map.json"), "--out", str(tmp_path / "run"), "--no-gpu", "--fast-iteration"]
    scenario = Scenario(run_seconds=0.2)
    with FakeComfy(scenario, output_dir=tmp_path / "o1") as a, FakeComfy(scenario, output_dir=tmp_path / "o2") as b:
        code = main([*argv, "--server", a.url, "--server", b.url, "--report"])
    assert code == 0, capsys.readouterr()
    assert f"report: {tmp_path / 'run' / REPORT_NAME}" in capsys.readouterr().out
    view = load_run(tmp_path / "run")
    assert view.kind == "farm run" and {s.server for s in view.scenes} == {a.url, b.url}
    assert all(s.server_detail and s.server_detail.startswith("srv-") for s in view.scenes)
    text = (tmp_path / "run" / REPORT_NAME).read_text("utf-8")
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', text).group(1))
    assert sorted(data["timeline"]["servers"]) == sorted([a.url, b.url]) and len(data["timeline"]["start"]) == 4
    assert 'Validator: <span class="word">PASSED</span>' in text


def test_names_the_os_refuses_are_rows_not_a_lost_report(tmp_path, capsys):
    """A marker name or scene id too long for the file system (or holding a NUL) is a problem on its row."""
    run_dir = make_runner_run(tmp_path / "run", Layout(scenes=2))
    metadata = json.loads((run_dir / "artifact-metadata.json").read_text("utf-8"))
    metadata["Scenes"][0]["Frames"]["MarkerName"] = "y" * 300 + ".done"
    metadata["Scenes"][1]["SceneId"] = "s" * 300
    metadata["Scenes"].append({"SceneId": "nul", "Frames": {"Count": 1, "MarkerName": "a\x00.done"}})
    (run_dir / "artifact-metadata.json").write_text(json.dumps(metadata), "utf-8")
    code, _, err = report(capsys, str(run_dir))
    assert code == 1 and err == ""
    text, page = parse(run_dir / REPORT_NAME)
    assert len([r for r in page.rows if r]) == 3
    assert "not found" in text


def test_a_fifo_frame_does_not_hang_the_report(tmp_path, capsys):
    run_dir = make_runner_run(tmp_path / "run", Layout(scenes=1))
    frame = run_dir / "scene-0000" / "frame_00002_.png"
    frame.unlink()
    os.mkfifo(frame)  # opening it for reading would block until a writer comes
    code, _, err = report(capsys, str(run_dir))
    assert code == 1 and err == ""
    text, _ = parse(run_dir / REPORT_NAME)
    assert "not a regular file" in text


def test_a_decompression_bomb_frame_gets_a_note_not_a_warning_or_hundreds_of_mb(tmp_path, capsys):
    from PIL import Image

    run_dir = make_runner_run(tmp_path / "run", Layout(scenes=1))
    frame = run_dir / "scene-0000" / "frame_00002_.png"
    side = int((Image.MAX_IMAGE_PIXELS or 89_478_485) ** 0.5) + 10  # past the warning limit, under the error one
    Image.new("1", (side, side)).save(frame)  # 1 bit a pixel: a small file that decodes to hundreds of MB of RGB
    code, _, err = report(capsys, str(run_dir))
    assert code == 1 and err == ""
    text, _ = parse(run_dir / REPORT_NAME)
    assert "too many pixels to decode for a thumbnail" in text


def test_a_huge_scene_list_is_cut_on_the_page_and_says_so(tmp_path, capsys, monkeypatch):
    import scene_telemetry.report._load as load

    monkeypatch.setattr(load, "MAX_SCENE_FILES", 5)
    run_dir = make_runner_run(tmp_path / "run", Layout(scenes=2))
    metadata = json.loads((run_dir / "artifact-metadata.json").read_text("utf-8"))
    metadata["Scenes"] += [{"SceneId": f"stub{i}"} for i in range(10)]
    (run_dir / "artifact-metadata.json").write_text(json.dumps(metadata), "utf-8")
    code, _, err = report(capsys, str(run_dir))
    assert code == 1 and err == ""
    text, page = parse(run_dir / REPORT_NAME)
    assert len([r for r in page.rows if r]) == 5
    assert "12 scenes listed; the page shows the first 5" in text


def test_a_frame_that_is_not_a_frame_format_is_never_decoded(tmp_path, capsys):
    """An EPS named .png would be handed to Ghostscript by Pillow: only the frame formats are tried."""
    from scene_telemetry.report._sheet import _make

    frame = tmp_path / "frame_00001_.png"
    frame.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    assert _make(frame, "first", frame.name).note == "unreadable: UnidentifiedImageError"


def test_names_that_are_not_utf8_are_shown_and_linked_not_a_crash(tmp_path, capsys):
    folder = make_sentinel_folder(tmp_path / "marked", scenes=1)
    [marker] = list(folder.rglob("*.done"))
    bad = marker.parent.with_name(os.fsdecode(b"shot\xff"))
    marker.parent.rename(bad)
    (folder / os.fsdecode(b"x\xff.telemetry.json")).write_text("{}", "utf-8")
    code, _, err = report(capsys, str(folder))
    assert code in (0, 1) and err == ""
    text, page = parse(folder / REPORT_NAME)
    assert "shot\ufffd" in text or "shot?" in text
    targets = [
        folder / os.fsdecode(unquote(link, errors="surrogateescape").encode("utf-8", "surrogateescape"))
        for link in page.links
    ]
    assert bad / marker.name in targets and all(t.exists() for t in targets)


def test_a_page_path_that_is_not_utf8_is_printed_on_a_strict_console(tmp_path, monkeypatch):
    import io
    import sys

    run = make_run(tmp_path / "output")
    console = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdout", console)
    target = tmp_path / os.fsdecode(b"r\xff.html")
    assert main(["report", str(run.run_dir), "-o", str(target)]) == 0
    console.flush()
    assert b"r\\udcff.html" in console.buffer.getvalue() and target.is_file()
