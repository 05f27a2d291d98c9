"""Prefix limits in encoded bytes, checked before anything is created (issue 9, item 6).

``"a/" + "日" * 200`` is 200 characters but 600 bytes in UTF-8: it passed the character limits, then
failed with a raw ``OSError [Errno 36]`` and left ``a/`` behind. File systems count bytes (NAME_MAX 255
per component, PATH_MAX 4096 per path on Linux), so the prefix is measured the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from scene_telemetry.telemetry import InvalidInputError, SceneContext, mark_files, plan_save, write_frames_with_marker
from scene_telemetry.telemetry._paths import FILE_NAME_ROOM_BYTES, name_limits

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX byte limits (Windows counts UTF-16 units)")

NAME_MAX, PATH_MAX = 255, 4096


def entries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def frames(count: int = 2) -> np.ndarray:
    return np.random.default_rng(0).random((count, 8, 8, 3), dtype=np.float32)


def test_the_platform_limits_are_read_from_the_file_system(output_dir: Path) -> None:
    assert name_limits(output_dir) == (os.pathconf(output_dir, "PC_NAME_MAX"), os.pathconf(output_dir, "PC_PATH_MAX"))


@pytest.mark.parametrize(
    ("prefix", "component"),
    [
        ("a/" + "日" * 200, "日" * 200),  # the case: 200 characters, 600 bytes, the file name part
        ("日" * 100 + "/frame", "日" * 100),  # a 300-byte folder name
        ("a/" + "é" * 120, "é" * 120),  # 240 bytes: under NAME_MAX, but not with the frame number and temp suffix
    ],
    ids=["file-name-600-bytes", "folder-300-bytes", "file-name-240-bytes"],
)
def test_a_component_over_the_byte_limit_is_refused_and_nothing_is_created(
    output_dir: Path, prefix: str, component: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        write_frames_with_marker(frames(), output_dir, prefix)
    message = str(caught.value)
    assert f"{len(component.encode())} bytes" in message and f"limit {NAME_MAX}" in message, message
    assert caught.value.field == "filename_prefix"
    assert entries(output_dir) == []


def test_a_whole_path_over_the_platform_limit_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["d" * 200] * ((3800 - len(bytes(tmp_path))) // 201))
    deep = deep / ("e" * (3800 - len(bytes(deep)) - 1))
    deep.mkdir(parents=True)
    assert len(bytes(deep)) == 3800
    prefix = "s" * 150 + "/" + "f" * 150  # each component fits; the whole path (4102 bytes) does not
    with pytest.raises(InvalidInputError, match=f"limit {PATH_MAX} bytes"):
        plan_save(deep, prefix)
    assert entries(deep) == []


def test_the_longest_accepted_file_name_really_writes(output_dir: Path) -> None:
    """The room kept for ``_NNNNN_.png`` and the hidden temp name is enough: the limit is exact, not a guess."""
    longest = "日" * ((NAME_MAX - FILE_NAME_ROOM_BYTES) // 3)
    done = write_frames_with_marker(frames(), output_dir, f"shot/{longest}", context=SceneContext(prompt_id="p"))
    assert done.marker_path.is_file() and len(done.frame_paths) == 2
    with pytest.raises(InvalidInputError):
        plan_save(output_dir, f"shot2/{longest}日")
    assert not (output_dir / "shot2").exists()


def test_mark_files_checks_the_marker_name_in_bytes(output_dir: Path) -> None:
    clip = output_dir / "clip.mp4"
    clip.write_bytes(b"\0" * 10)
    with pytest.raises(InvalidInputError, match="bytes"):
        mark_files([clip], output_dir, "v/" + "日" * 100)
    assert entries(output_dir) == ["clip.mp4"]
