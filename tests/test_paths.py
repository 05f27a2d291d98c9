"""filename_prefix resolution: ComfyUI's rules, minus its escapes."""

from __future__ import annotations

import os
import time
import types
from pathlib import Path

import pytest
from scene_telemetry.telemetry import InvalidInputError, UnsafePathError, _paths, plan_save
from scene_telemetry.telemetry._paths import MAX_PREFIX_CHARS, ensure_inside, expand_tokens, next_counter


def test_subfolder_and_filename(output_dir: Path) -> None:
    plan = plan_save(output_dir, "shots/s01/frame")
    assert plan.folder == output_dir / "shots" / "s01"
    assert plan.folder.is_dir()
    assert (plan.filename, plan.subfolder, plan.counter) == ("frame", "shots/s01", 1)
    assert plan.frame_name(0) == "frame_00001_.png"
    assert plan.frame_name(2) == "frame_00003_.png"
    assert plan.marker_path == output_dir / "shots" / "s01" / "frame.done"


def test_counter_counts_any_extension(output_dir: Path) -> None:
    (output_dir / "f_00007_.png").write_bytes(b"")
    (output_dir / "f_00003_.webp").write_bytes(b"")
    (output_dir / "other_00099_.png").write_bytes(b"")
    assert next_counter(output_dir, "f") == 8
    assert plan_save(output_dir, "f").counter == 8


def test_tokens_expand_server_side() -> None:
    now = time.struct_time((2026, 3, 4, 5, 6, 7, 0, 0, 0))
    assert expand_tokens("%year%-%month%-%day%/%width%x%height%_%hour%%minute%%second%", 832, 480, now) == (
        "2026-03-04/832x480_050607"
    )


@pytest.mark.parametrize(
    "prefix",
    ["../escape", "a/../../b", "/etc/passwd", "..", "sub/../../../x"],
)
def test_escaping_prefix_refused_and_nothing_created(output_dir: Path, prefix: str) -> None:
    before = sorted(output_dir.parent.rglob("*"))
    with pytest.raises((UnsafePathError, InvalidInputError)):
        plan_save(output_dir, prefix)
    assert sorted(output_dir.parent.rglob("*")) == before


def test_symlink_inside_output_pointing_outside_refused(output_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, output_dir / "link")
    with pytest.raises(UnsafePathError, match="escapes the output directory"):
        plan_save(output_dir, "link/frame")
    with pytest.raises(UnsafePathError):
        plan_save(output_dir, "link/deeper/frame")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a\x00b", "NUL"),
        ("x" * (MAX_PREFIX_CHARS + 1), "characters long"),
        ("a/" + "y" * 300 + "/f", "component"),
        (".", "no file name"),
    ],
)
def test_bad_prefix_text(output_dir: Path, prefix: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        plan_save(output_dir, prefix)
    assert list(output_dir.iterdir()) == []


def test_trailing_slash_behaves_like_comfyui(output_dir: Path) -> None:
    """ComfyUI quirk kept for compatibility: 'sub/' saves as sub_00001_.png in the root."""
    plan = plan_save(output_dir, "sub/")
    assert (plan.folder, plan.filename, plan.subfolder) == (output_dir, "sub", "")


def test_a_path_on_another_drive_is_an_unsafe_path(output_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On Windows commonpath raises ValueError for C:\\out and D:\\x; that is an escape, not a crash."""

    def different_drives(paths: list[object]) -> str:
        raise ValueError("Paths don't have the same drive")

    # Only _paths sees Windows' commonpath (patching os.path itself would reach pytest's own reporting).
    fake_path = types.SimpleNamespace(**{**vars(os.path), "commonpath": different_drives})
    monkeypatch.setattr(_paths, "os", types.SimpleNamespace(**{**vars(os), "path": fake_path}))
    with pytest.raises(UnsafePathError, match="run_dir escapes the output directory"):
        ensure_inside(output_dir, output_dir / "x", what="run_dir")
