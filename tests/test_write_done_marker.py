"""WriteDoneMarker called directly, as ComfyUI calls it, with torch tensors."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from saveimage_reference import save_images_like_comfyui
from scene_telemetry.nodes import _comfy
from scene_telemetry.nodes.write_done_marker import WriteDoneMarker
from scene_telemetry.telemetry import (
    InvalidInputError,
    UnsafePathError,
    _done,
    contract_errors,
    load_schema,
    verify_marker,
)

PROMPT = {"1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 3, "color": 0}}}
EXTRA_PNGINFO = {"workflow": {"nodes": [], "links": [], "version": 0.4}}


@pytest.fixture
def comfy(monkeypatch: pytest.MonkeyPatch, output_dir: Path) -> dict[str, Any]:
    """Stand-in for the ComfyUI shim: an output dir and an executing context."""
    state: dict[str, Any] = {"prompt_id": "prompt-1", "node_id": "7", "metadata_disabled": False}
    monkeypatch.setattr(_comfy, "output_directory", lambda: str(output_dir))
    monkeypatch.setattr(_comfy, "executing_context", lambda: (state["prompt_id"], state["node_id"]))
    monkeypatch.setattr(_comfy, "comfyui_version", lambda: "0.8.0")
    monkeypatch.setattr(_comfy, "metadata_disabled", lambda: state["metadata_disabled"])
    return state


def frames(count: int = 3, height: int = 24, width: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # Values slightly outside 0..1 exercise SaveImage's clipping.
    return torch.rand(count, height, width, 3, generator=generator) * 1.1 - 0.05


def run(**kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("prompt", PROMPT)
    kwargs.setdefault("extra_pnginfo", EXTRA_PNGINFO)
    result: dict[str, Any] = WriteDoneMarker().write(**kwargs)
    return result


def test_frames_then_valid_marker(comfy: dict[str, Any], output_dir: Path) -> None:
    out = run(filename_prefix="shots/s01/frame", images=frames(), scene_id="s01")
    marker = output_dir / "shots" / "s01" / "frame.done"
    body = verify_marker(marker)
    assert contract_errors(body, "done-marker") == []
    assert [f["Name"] for f in body["Files"]] == ["frame_00001_.png", "frame_00002_.png", "frame_00003_.png"]
    assert (body["FrameCount"], body["Width"], body["Height"]) == (3, 32, 24)
    assert (body["PromptId"], body["NodeId"], body["SceneId"], body["Source"]) == ("prompt-1", "7", "s01", "node")
    assert body["Subfolder"] == "shots/s01"
    assert body["Versions"]["ComfyUI"] == "0.8.0"
    assert body["TotalBytes"] == sum(f["Bytes"] for f in body["Files"])
    assert out["result"][0]["marker_path"] == str(marker)
    assert out["result"][0]["body"] == body


def test_png_bytes_identical_to_saveimage(comfy: dict[str, Any], output_dir: Path, tmp_path: Path) -> None:
    images = frames(4)
    run(filename_prefix="frame", images=images)
    reference = tmp_path / "reference"
    reference.mkdir()
    names = save_images_like_comfyui(images, str(reference), "frame", 1, PROMPT, EXTRA_PNGINFO)
    for name in names:
        assert (output_dir / name).read_bytes() == (reference / name).read_bytes()
    with Image.open(output_dir / names[0]) as png:
        assert json.loads(png.text["prompt"]) == PROMPT
        assert json.loads(png.text["workflow"]) == EXTRA_PNGINFO["workflow"]


def test_metadata_disabled_writes_no_text_chunks(comfy: dict[str, Any], output_dir: Path) -> None:
    comfy["metadata_disabled"] = True
    run(filename_prefix="frame", images=frames(1))
    with Image.open(output_dir / "frame_00001_.png") as png:
        assert png.text == {}


def test_ui_payload_like_saveimage(comfy: dict[str, Any]) -> None:
    out = run(filename_prefix="sub/frame", images=frames(2))
    assert out["ui"]["images"] == [
        {"filename": "frame_00001_.png", "subfolder": "sub", "type": "output"},
        {"filename": "frame_00002_.png", "subfolder": "sub", "type": "output"},
    ]
    assert isinstance(out["ui"]["text"], list) and "2 file(s)" in out["ui"]["text"][0]


def test_never_cached() -> None:
    value = WriteDoneMarker.IS_CHANGED(filename_prefix="frame", images=None)
    assert math.isnan(value)
    assert WriteDoneMarker.OUTPUT_NODE is True


def test_requeue_writes_fresh_frames_and_marker(comfy: dict[str, Any], output_dir: Path) -> None:
    run(filename_prefix="frame", images=frames(2))
    first = verify_marker(output_dir / "frame.done")
    comfy["prompt_id"] = "prompt-2"
    run(filename_prefix="frame", images=frames(2))
    second = verify_marker(output_dir / "frame.done")
    assert [f["Name"] for f in second["Files"]] == ["frame_00003_.png", "frame_00004_.png"]
    assert (first["PromptId"], second["PromptId"]) == ("prompt-1", "prompt-2")


def test_marker_committed_only_after_every_frame_is_on_disk(
    comfy: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    real_commit = _done.commit_marker

    def checking_commit(path: Path, body: dict[str, Any]) -> Path:
        folder = Path(path).parent
        seen.append([f["Name"] for f in body["Files"] if (folder / f["Name"]).stat().st_size == f["Bytes"]])
        assert not Path(path).exists()
        return real_commit(path, body)

    monkeypatch.setattr(_done, "commit_marker", checking_commit)
    run(filename_prefix="frame", images=frames(5))
    assert seen == [[f"frame_{i:05}_.png" for i in range(1, 6)]]


def test_marks_vhs_files(comfy: dict[str, Any], output_dir: Path) -> None:
    video = output_dir / "video" / "clip_00001.mp4"
    video.parent.mkdir()
    video.write_bytes(b"\x00" * 1234)
    still = output_dir / "video" / "clip_00001.png"
    still.write_bytes(b"\x89PNG")
    out = run(filename_prefix="video/clip", filenames=(True, [str(still), str(video)]))
    body = verify_marker(output_dir / "video" / "clip.done")
    assert [(f["Name"], f["Bytes"]) for f in body["Files"]] == [("clip_00001.png", 4), ("clip_00001.mp4", 1234)]
    assert (body["Width"], body["Height"], body["Subfolder"]) == (None, None, "video")
    assert "images" not in out["ui"]


def test_a_single_unbatched_frame_is_saved_whole(comfy: dict[str, Any], output_dir: Path) -> None:
    # An [H, W, C] tensor was indexed as a batch: the PNG held its first row (3 x 32 px), the marker said 32 x 24.
    frame = frames(1)[0]
    out = run(filename_prefix="single/frame", images=frame)
    png = output_dir / "single" / out["ui"]["images"][0]["filename"]
    body = out["result"][0]["body"]
    assert (body["FrameCount"], body["Width"], body["Height"]) == (1, 32, 24)
    with Image.open(png) as image:
        assert image.size == (32, 24)
        assert np.array_equal(np.asarray(image), np.clip(255.0 * frame.numpy(), 0, 255).astype(np.uint8))
    verify_marker(out["result"][0]["marker_path"])


def test_marks_a_file_whose_name_starts_with_two_dots(comfy: dict[str, Any], output_dir: Path) -> None:
    video = output_dir / "video" / "..clip.mp4"  # in the folder, not above it
    video.parent.mkdir()
    video.write_bytes(b"\x00" * 10)
    run(filename_prefix="video/clip", filenames=(True, [str(video)]))
    assert [f["Name"] for f in verify_marker(output_dir / "video" / "clip.done")["Files"]] == ["..clip.mp4"]


def test_marked_files_must_not_lie_above_the_first_files_folder(comfy: dict[str, Any], output_dir: Path) -> None:
    (output_dir / "video").mkdir()
    first, above = output_dir / "video" / "a.mp4", output_dir / "b.mp4"
    first.write_bytes(b"a")
    above.write_bytes(b"b")
    with pytest.raises(InvalidInputError, match="first file's folder or below"):
        run(filename_prefix="video/clip", filenames=(True, [str(first), str(above)]))


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"filename_prefix": "../escape/frame"}, UnsafePathError, "escapes"),
        ({"filename_prefix": "/tmp/abs/frame"}, UnsafePathError, "absolute"),
        ({"filename_prefix": "fr\x00ame"}, InvalidInputError, "NUL"),
        ({"filename_prefix": "f" * 600}, InvalidInputError, "characters long"),
        ({"filename_prefix": "frame", "images": torch.zeros(0, 8, 8, 3)}, InvalidInputError, "empty batch"),
        ({"filename_prefix": "frame", "images": torch.zeros(8, 8)}, InvalidInputError, "tensor"),
        ({"filename_prefix": "frame", "images": None}, InvalidInputError, "connect"),
        ({"filename_prefix": "frame", "scene_id": "x" * 500}, InvalidInputError, "scene_id"),
        ({"filename_prefix": "frame", "filenames": (True, [])}, InvalidInputError, "empty"),
        ({"filename_prefix": "frame", "filenames": (True, ["/etc/hostname"])}, UnsafePathError, "escapes"),
        ({"filename_prefix": "frame", "filenames": "not-a-list"}, InvalidInputError, "VHS_FILENAMES"),
    ],
)
def test_bad_input_refused_with_nothing_written(
    comfy: dict[str, Any], output_dir: Path, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    kwargs.setdefault("images", frames(1))
    with pytest.raises(error, match=message):
        run(**kwargs)
    assert _tree(output_dir) == []


def test_symlink_escape_refused(comfy: dict[str, Any], output_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, output_dir / "innocent")
    with pytest.raises(UnsafePathError):
        run(filename_prefix="innocent/frame", images=frames(1))
    assert list(outside.iterdir()) == []


def test_marker_holds_nothing_beyond_the_contract(comfy: dict[str, Any], output_dir: Path) -> None:
    """Secrets from extra_data never reach the marker: the node does not even ask for them."""
    hidden = WriteDoneMarker.INPUT_TYPES()["hidden"]
    assert set(hidden.values()) == {"PROMPT", "EXTRA_PNGINFO"}
    run(filename_prefix="frame", images=frames(1), extra_pnginfo={"workflow": {}, "api_key_comfy_org": "sk-secret"})
    text = (output_dir / "frame.done").read_text()
    assert "sk-secret" not in text
    assert set(json.loads(text)) == set(load_schema("done-marker")["properties"])


@pytest.mark.parametrize("prefix", [".", "..", "video/.."])
def test_vhs_mode_refuses_a_prefix_without_a_name(comfy: dict[str, Any], output_dir: Path, prefix: str) -> None:
    clip = output_dir / "clip_00001.mp4"
    clip.write_bytes(b"\x00" * 10)
    with pytest.raises(InvalidInputError, match="no file name part"):
        run(filename_prefix=prefix, filenames=(True, [str(clip)]))
    assert _tree(output_dir) == ["clip_00001.mp4"]
