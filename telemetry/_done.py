"""The WriteDoneMarker operation, independent of ComfyUI.

``write_frames_with_marker`` saves a frame batch and then commits the marker;
``mark_files`` commits a marker for files another node already wrote (VHS).
Both refuse unsafe input before anything is written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._atomic import sweep_stale_temps
from ._errors import InvalidInputError
from ._frames import as_batch, fsync_existing, png_info, save_png_frames
from ._marker import MarkedFile, build_marker, commit_marker
from ._paths import check_name_lengths, check_prefix_text, ensure_inside, marker_name, plan_save, relative_posix

logger = logging.getLogger(__name__)

MAX_SCENE_ID_CHARS = 200


@dataclass(frozen=True)
class SceneContext:
    """Who is writing: ComfyUI's ids when under ComfyUI, else ``None``."""

    prompt_id: str | None = None
    node_id: str | None = None
    scene_id: str | None = None
    comfyui_version: str | None = None


@dataclass(frozen=True)
class DoneResult:
    """What was written; :meth:`as_output` is the node's ``DONE_MARKER`` value."""

    marker_path: Path
    output_dir: Path
    subfolder: str
    body: dict[str, Any]
    frame_paths: list[Path] = field(default_factory=list)

    def as_output(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict passed between nodes."""
        return {
            "marker_path": str(self.marker_path),
            "output_dir": str(self.output_dir),
            "subfolder": self.subfolder,
            "body": self.body,
        }


def check_scene_id(scene_id: str | None) -> str | None:
    """Normalise an optional scene id ('' → None), refusing NUL bytes and absurd lengths."""
    if scene_id is None or not scene_id.strip():
        return None
    if "\x00" in scene_id or len(scene_id) > MAX_SCENE_ID_CHARS:
        raise InvalidInputError(f"scene_id must be 1..{MAX_SCENE_ID_CHARS} characters without NUL", field="scene_id")
    return scene_id.strip()


def write_frames_with_marker(
    images: Any,
    output_dir: str | os.PathLike[str],
    filename_prefix: str,
    *,
    context: SceneContext = SceneContext(),
    prompt: Any | None = None,
    extra_pnginfo: Mapping[str, Any] | None = None,
    embed_metadata: bool = True,
    workers: int | None = None,
) -> DoneResult:
    """Save *images* like SaveImage, fsync every frame, then commit ``<name>.done``."""
    scene_id = check_scene_id(context.scene_id)
    images, frames, height, width = as_batch(images)
    plan = plan_save(output_dir, filename_prefix, width, height)
    sweep_stale_temps(plan.folder, own=plan.owns)
    targets = [plan.folder / plan.frame_name(i) for i in range(frames)]
    info = png_info(prompt, extra_pnginfo) if embed_metadata else None
    sizes = save_png_frames(images, targets, info=info, workers=workers)
    files = [MarkedFile(t.name, s) for t, s in zip(targets, sizes, strict=True)]
    body = build_marker(
        files,
        source="node",
        prefix=plan.prefix,
        subfolder=plan.subfolder,
        width=width,
        height=height,
        prompt_id=context.prompt_id,
        node_id=context.node_id,
        scene_id=scene_id,
        comfyui_version=context.comfyui_version,
    )
    marker = commit_marker(plan.marker_path, body)
    logger.info("wrote %d frame(s) and %s", frames, marker)
    return DoneResult(marker, plan.output_dir, plan.subfolder, body, targets)


def mark_files(
    paths: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    filename_prefix: str,
    *,
    context: SceneContext = SceneContext(),
    width: int | None = None,
    height: int | None = None,
) -> DoneResult:
    """Commit a marker for files another node wrote (e.g. VHS ``VHS_FILENAMES``).

    The marker goes in the folder of the first file, named after the prefix's
    basename; every file must exist inside the output directory.
    """
    scene_id = check_scene_id(context.scene_id)
    check_prefix_text(filename_prefix)
    if not paths:
        raise InvalidInputError("the file list is empty: there is nothing to mark", field="filenames")
    out = Path(os.path.realpath(output_dir))
    resolved = [ensure_inside(out, Path(p), what=f"file {p}") for p in paths]
    missing = [str(p) for p in resolved if not p.is_file()]
    if missing:
        raise InvalidInputError(f"listed file(s) do not exist: {', '.join(missing[:3])}", field="filenames")
    folder = resolved[0].parent
    names = [relative_posix(folder, p) for p in resolved]
    if any(n == ".." or n.startswith("../") for n in names):  # not "..clip.mp4", a name in the folder
        raise InvalidInputError("every listed file must be in the first file's folder or below", field="filenames")
    sizes = fsync_existing(resolved)
    filename = os.path.basename(os.path.normpath(filename_prefix))
    if filename in ("", ".", ".."):
        raise InvalidInputError(f"filename_prefix {filename_prefix!r} has no file name part", field="filename_prefix")
    check_name_lengths(folder, [], marker_name(filename))
    subfolder = relative_posix(out, folder)
    body = build_marker(
        [MarkedFile(n, s) for n, s in zip(names, sizes, strict=True)],
        source="node",
        prefix=filename_prefix,
        subfolder="" if subfolder == "." else subfolder,
        width=width,
        height=height,
        prompt_id=context.prompt_id,
        node_id=context.node_id,
        scene_id=scene_id,
        comfyui_version=context.comfyui_version,
    )
    marker = commit_marker(folder / marker_name(filename), body)
    return DoneResult(marker, out, body["Subfolder"], body, resolved)
