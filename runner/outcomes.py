"""The typed results of the runner's steps: a marker, a scene, a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..telemetry import ExitReason


@dataclass
class MarkerOutcome:
    """How the scene's done marker was obtained."""

    detected: bool = False
    wait_seconds: float = 0.0
    forced: bool = False
    body: dict[str, Any] | None = None
    folder: Path | None = None
    """Local folder of the marker (None when it was only read through /view)."""
    problem: str | None = None


@dataclass
class SceneOutcome:
    """One scene's result: its exit reason and contract document."""

    scene_id: str
    prompt_id: str | None
    exit_reason: ExitReason
    document: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.exit_reason == "success" and bool(self.document.get("Frames"))


@dataclass
class RunResult:
    """Every scene's outcome plus the validator's verdict on the run folder."""

    run_id: str
    run_dir: Path
    scenes: list[SceneOutcome] = field(default_factory=list)
    validation_ok: bool | None = None
    validation_report: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.scenes) and self.validation_ok is not False
