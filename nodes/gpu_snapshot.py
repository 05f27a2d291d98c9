"""GPUTelemetrySnapshot: a pass-through that records the GPU (or CPU) state where it sits."""

from __future__ import annotations

import logging
from typing import Any

from ..telemetry import BEFORE_LABEL, scene_snapshot, ui_line
from . import _comfy
from ._names import CATEGORY, display_name, node_id

logger = logging.getLogger(__name__)


class GPUTelemetrySnapshot:
    """Returns its input unchanged plus a GPU_SNAPSHOT; the wiring decides when it runs."""

    NAME = node_id("GPUSnapshot")
    DISPLAY_NAME = display_name("GPU Telemetry Snapshot")
    CATEGORY = CATEGORY
    FUNCTION = "snapshot"
    RETURN_TYPES = ("*", "GPU_SNAPSHOT")
    RETURN_NAMES = ("value", "snapshot")
    OUTPUT_TOOLTIPS = (
        "The input, unchanged: wire it on to the next node so this snapshot runs in between.",
        "Device, memory and probe tier at this point; wire 'before' and 'after' into Scene Telemetry Collector.",
    )
    DESCRIPTION = (
        "Records the compute device's memory (NVML → amdsmi → torch → CPU record, the tier used and why "
        "better ones did not answer) and host RAM. Place one between the model loader and the sampler "
        "(label 'before': also resets torch's peak counters and starts the peak-memory sampler) and one after "
        "VAE decode (label 'after': stops it and records the peak)."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "value": ("*", {"tooltip": "Anything (model, latent, images): passed through unchanged."}),
                "label": (
                    "STRING",
                    {"default": BEFORE_LABEL, "tooltip": "'before', 'after' or free text, kept in the snapshot."},
                ),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> float:
        # NaN never equals itself: a cached snapshot would replay an old measurement.
        return float("nan")

    def snapshot(self, value: Any, label: str) -> dict[str, Any]:
        prompt_id, _node = _comfy.executing_context()
        hint, hint_note = _comfy.device_hint()
        snap = scene_snapshot(
            label,
            prompt_id=prompt_id,
            hint=hint,
            hint_note=hint_note,
            ended=lambda: _comfy.prompt_end_reason(prompt_id),
        )
        line = ui_line(snap)
        logger.debug("GPU snapshot %s: %s", snap["Label"], line)
        return {"ui": {"text": [line]}, "result": (value, snap)}
