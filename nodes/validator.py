"""RunSummaryValidator: does run-summary.txt agree with artifact-metadata.json, the telemetry and the disk?"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..telemetry import InvalidInputError, ValidationFailed, ensure_inside, record_verdict, validate_run
from . import _comfy
from ._names import CATEGORY, display_name, node_id

logger = logging.getLogger(__name__)

UI_PROBLEM_LINES = 5
"""Problems shown on the node face under the verdict; the full report is the 'report' output."""


class RunSummaryValidator:
    """Validates a run folder: contract, summary vs metadata per field, telemetry files, marker, timestamps."""

    NAME = node_id("RunSummaryValidator")
    DISPLAY_NAME = display_name("Run Summary Validator")
    CATEGORY = CATEGORY
    FUNCTION = "validate"
    RETURN_TYPES = ("BOOLEAN", "STRING")
    RETURN_NAMES = ("ok", "report")
    OUTPUT_TOOLTIPS = ("True when every check passed.", "One line per check: field, summary, metadata, verdict.")
    OUTPUT_NODE = True
    DESCRIPTION = (
        "Checks that run-summary.txt and artifact-metadata.json agree field by field, that both JSON documents "
        "satisfy contract v1, that every scene has its telemetry file and a marker matching the files on disk, "
        "and that timestamps are in order. Optionally fails the prompt on any mismatch."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "fail_on_mismatch": ("BOOLEAN", {"default": False, "tooltip": "Raise (fail the prompt) if not ok."}),
            },
            "optional": {
                "telemetry": ("SCENE_TELEMETRY", {"tooltip": "From Scene Telemetry Collector (wins over run_dir)."}),
                "run_dir": (
                    "STRING",
                    {"default": "", "tooltip": "A run folder inside the output directory (relative or absolute)."},
                ),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> float:
        # The files on disk can change between prompts: always look again.
        return float("nan")

    def validate(self, fail_on_mismatch: bool = False, telemetry: Any = None, run_dir: str = "") -> dict[str, Any]:
        output_dir = Path(_comfy.output_directory())
        folder = resolve_run_dir(output_dir, telemetry, run_dir)
        report = validate_run(folder, output_dir=output_dir)
        logger.info("run summary validation of %s: %s", folder, report.verdict_line())
        record_verdict(report.ok)
        if fail_on_mismatch and not report.ok:
            raise ValidationFailed(report.render_text(problems_only=True), path=folder)
        problems = report.render_text(problems_only=True).splitlines()[1 : 1 + UI_PROBLEM_LINES]
        return {"ui": {"text": [report.verdict_line(), *problems]}, "result": (report.ok, report.render_text())}


def resolve_run_dir(output_dir: Path, telemetry: Any, run_dir: str) -> Path:
    """The folder to check: the collector's run_dir, else *run_dir* (relative to the output directory)."""
    if telemetry is not None:
        if not isinstance(telemetry, dict) or not isinstance(telemetry.get("run_dir"), str):
            raise InvalidInputError("telemetry is not a SCENE_TELEMETRY value", field="telemetry")
        candidate = Path(telemetry["run_dir"])
    elif run_dir and run_dir.strip():
        if "\x00" in run_dir:
            raise InvalidInputError("run_dir contains a NUL byte", field="run_dir")
        candidate = output_dir / run_dir.strip()
    else:
        raise InvalidInputError("connect 'telemetry' or give 'run_dir'", field="run_dir")
    return ensure_inside(output_dir, candidate, what="run_dir")
