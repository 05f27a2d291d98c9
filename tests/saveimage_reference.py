"""ComfyUI 0.8.0 SaveImage's save loop, reproduced as the baseline to compare against.

Same conversion, same PngInfo text chunks, same compress_level, sequential, no
fsync: what `nodes.SaveImage.save_images` does per image.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo


def save_images_like_comfyui(
    images: Any, folder: str, filename: str, counter: int, prompt: Any = None, extra_pnginfo: Any = None
) -> list[str]:
    written = []
    for batch_number, image in enumerate(images):
        i = 255.0 * image.cpu().numpy() if hasattr(image, "cpu") else 255.0 * np.asarray(image)
        img = Image.fromarray(np.clip(i, 0, 255).astype(np.uint8))
        metadata = PngInfo()
        if prompt is not None:
            metadata.add_text("prompt", json.dumps(prompt))
        if extra_pnginfo is not None:
            for x in extra_pnginfo:
                metadata.add_text(x, json.dumps(extra_pnginfo[x]))
        filename_with_batch_num = filename.replace("%batch_num%", str(batch_number))
        file = f"{filename_with_batch_num}_{counter:05}_.png"
        img.save(os.path.join(folder, file), pnginfo=metadata, compress_level=4)
        written.append(file)
        counter += 1
    return written
