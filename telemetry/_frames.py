"""Encoding and durably saving frame batches as PNG, SaveImage-compatible.

Pixels are converted exactly as ComfyUI's SaveImage does
(``clip(255 * x, 0, 255).astype(uint8)``) and PNGs use the same text chunks and
``compress_level=4``, so files are byte-for-byte what SaveImage would write.
Frames are encoded on a thread pool (Pillow's zlib encoder and numpy release the
GIL), each written to a hidden temp file, fsynced and renamed into place.

numpy and Pillow are imported by the functions that use them: the command-line
tool imports this package (``telemetry``) and must start without them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ._atomic import fsync_directory, fsync_file, replace_with_retry, temp_name_for
from ._errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np
    from PIL.PngImagePlugin import PngInfo

PNG_COMPRESS_LEVEL = 4
"""SaveImage's compress_level."""
ENCODER_MEMORY_BUDGET_BYTES = 1024 * 1024 * 1024
"""Working memory the encoder threads may hold together (one frame in flight each), however many cores there are."""
BYTES_PER_VALUE_IN_FLIGHT = 6
"""A frame in flight, per pixel value: the float32 scaled copy (4 B, clipped in place), the uint8 frame and Pillow's
copy (1 B each). Measured per thread at 1920x1080 RGB: 35-37 MiB (57 MiB before the clip was done in place)."""
MAX_FRAMES = 100_000
MAX_SIDE_PX = 16_384


class _TensorLike(Protocol):
    shape: Sequence[int]

    def __getitem__(self, index: int) -> Any: ...


def as_batch(images: Any) -> tuple[Any, int, int, int]:
    """Return (batch, frames, height, width) of an IMAGE batch ``[B, H, W, C]``, refusing bad ones.

    A single ``[H, W, C]`` frame becomes a batch of one (``images[None]``), so that
    ``batch[i]`` is always a whole frame.
    """
    shape = tuple(int(s) for s in getattr(images, "shape", ()))
    if len(shape) == 3:
        images, shape = images[None], (1, *shape)
    if len(shape) != 4:
        raise InvalidInputError(f"images must be a [batch, height, width, channels] tensor, got shape {shape}")
    frames, height, width, channels = shape
    if frames == 0:
        raise InvalidInputError("images is an empty batch: there are no frames to save", field="images")
    if frames > MAX_FRAMES:
        raise InvalidInputError(f"images has {frames} frames (limit {MAX_FRAMES})", field="images")
    if not (0 < height <= MAX_SIDE_PX and 0 < width <= MAX_SIDE_PX):
        raise InvalidInputError(f"frame size {width}x{height} is outside 1..{MAX_SIDE_PX} px", field="images")
    if channels not in (1, 3, 4):
        raise InvalidInputError(f"frames have {channels} channels; expected 1, 3 or 4", field="images")
    return images, frames, height, width


def frame_to_uint8(frame: Any) -> np.ndarray[Any, Any]:
    """SaveImage's conversion of one ``[H, W, C]`` float frame in 0..1 to uint8."""
    import numpy as np

    if hasattr(frame, "detach"):
        frame = frame.detach()
    if hasattr(frame, "cpu"):
        frame = frame.cpu().numpy()
    array = 255.0 * np.asarray(frame)
    np.clip(array, 0, 255, out=array)  # in place: the same values as SaveImage's np.clip, one copy fewer
    out = array.astype(np.uint8)
    if out.ndim == 3 and out.shape[2] == 1:
        out = out[:, :, 0]
    return out


def png_info(prompt: Any | None, extra_pnginfo: Mapping[str, Any] | None) -> PngInfo:
    """The text chunks SaveImage writes: 'prompt' and every key of extra_pnginfo."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        info.add_text(str(key), json.dumps(value))
    return info


def _write_png(array: np.ndarray[Any, Any], target: Path, info: PngInfo | None) -> int:
    from PIL import Image

    temp = temp_name_for(target)
    try:
        with open(temp, "xb") as handle:
            Image.fromarray(array).save(handle, format="PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL)
            handle.flush()
            fsync_file(handle.fileno())
        replace_with_retry(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target.stat().st_size


def encoder_pool_size(
    frames: int,
    values_per_frame: int,
    *,
    requested: int | None = None,
    cpu_count: int | None = None,
    budget_bytes: int | None = None,
) -> int:
    """Threads that encode *frames* frames of *values_per_frame* values (height x width x channels).

    At most one per frame and, unless *requested*, one per core and as many as
    :data:`ENCODER_MEMORY_BUDGET_BYTES` holds at :data:`BYTES_PER_VALUE_IN_FLIGHT`:
    on a 64-core host a 1080p batch gets 28 threads (~1 GiB), not 64 (~3.6 GiB).
    A *requested* count is the caller's choice and is only capped by *frames*.
    """
    if requested is not None:
        return max(1, min(requested, frames))
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    budget = ENCODER_MEMORY_BUDGET_BYTES if budget_bytes is None else budget_bytes
    by_memory = budget // max(1, values_per_frame * BYTES_PER_VALUE_IN_FLIGHT)
    return max(1, min(cores, frames, by_memory))


def save_png_frames(
    images: _TensorLike,
    targets: Sequence[Path],
    *,
    info: PngInfo | None,
    workers: int | None = None,
) -> list[int]:
    """Encode ``images[i]`` to ``targets[i]`` in parallel; return the sizes in bytes.

    Every frame is fsynced and renamed into place, then each folder is fsynced
    once, so when this returns every frame is durable.
    """
    count = len(targets)
    values = math.prod(int(side) for side in tuple(images.shape)[1:]) if len(images.shape) == 4 else 0
    pool_size = encoder_pool_size(count, values, requested=workers)

    def job(i: int) -> int:
        return _write_png(frame_to_uint8(images[i]), targets[i], info)

    if pool_size == 1:
        sizes = [job(i) for i in range(count)]
    else:
        with ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="scene-telemetry-png") as pool:
            sizes = list(pool.map(job, range(count)))
    for folder in {t.parent for t in targets}:
        fsync_directory(folder)
    return sizes


def fsync_existing(paths: Sequence[Path]) -> list[int]:
    """fsync files another node wrote (e.g. VHS Video Combine) and return their sizes."""
    sizes = []
    for path in paths:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            fsync_file(fd)
        finally:
            os.close(fd)
        sizes.append(path.stat().st_size)
    for folder in {p.parent for p in paths}:
        fsync_directory(folder)
    return sizes
