"""A run folder is committed as one unit across re-queues and crashes (issue 9, item 3).

A re-queued prefix rewrites the same folder: a new marker, then the collector's telemetry, summary and
metadata. Whatever a reader sees at any instant must either validate as one run or be clearly not yet
complete (no ``artifact-metadata.json``), and a crash must never leave a mixed set behind.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
from scene_telemetry.telemetry import SceneContext, validate_run, write_frames_with_marker
from scene_telemetry.telemetry._atomic import TEMP_SUFFIX
from scene_telemetry.telemetry._collect import collect_scene
from scene_telemetry.telemetry._layout import ARTIFACT_METADATA_NAME, RUN_SUMMARY_NAME

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill loop forks a writer (POSIX)")

KILL_TRIALS = 320
FOLDERS = 8
SEED = 20261203

logger = logging.getLogger(__name__)


def requeue(output_dir: Path, prefix: str, prompt_id: str) -> None:
    """One re-queued prompt of an editor graph: WriteDoneMarker, then the collector, into the same folder."""
    images = np.random.default_rng(len(prompt_id)).random((2, 8, 8, 3), dtype=np.float32)
    context = SceneContext(prompt_id=prompt_id, scene_id="s01")
    done = write_frames_with_marker(images, output_dir, prefix, context=context, workers=1)
    collect_scene(
        marker=done.as_output(),
        scene_id="s01",
        gpu_before=None,
        gpu_after=None,
        policy=None,
        prompt_id=prompt_id,
        queue_start_ms=None,
        comfyui_version=None,
    )


def _writer(output_dir: Path, prefix: str, trial: int) -> NoReturn:
    """The forked child: re-queue the prefix until killed."""
    try:
        for n in range(1_000_000):
            requeue(output_dir, prefix, f"trial{trial}-prompt{n}")
    finally:
        os._exit(0)


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX))


def test_sigkill_during_requeued_writes_never_leaves_a_mixed_run(
    output_dir: Path, record_property: Callable[[str, object], None]
) -> None:
    rng = random.Random(SEED)
    prefixes = [f"shot{i}/frame" for i in range(FOLDERS)]
    started = time.monotonic()
    for i, prefix in enumerate(prefixes):
        requeue(output_dir, prefix, f"first-{i}")
    one_write_s = (time.monotonic() - started) / FOLDERS
    checked, failures = 0, []
    for trial in range(KILL_TRIALS):
        prefix = prefixes[trial % FOLDERS]
        pid = os.fork()
        if pid == 0:
            _writer(output_dir, prefix, trial)
        time.sleep(rng.uniform(0.0, 4.0 * one_write_s))  # kill points across every phase, a commit or more in
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        folder = output_dir / prefix.split("/")[0]
        if (folder / ARTIFACT_METADATA_NAME).exists():
            checked += 1
            report = validate_run(folder)
            if not report.ok:
                failures.append(f"trial {trial}: {report.render_text(problems_only=True)}")
    logger.info(
        "SIGKILL loop: %d trials, %d folders with metadata validated, %d failed", KILL_TRIALS, checked, len(failures)
    )
    record_property("sigkill_trials", KILL_TRIALS)
    record_property("folders_validated", checked)
    assert not failures, f"{len(failures)} of {checked} folders failed validation; first:\n{failures[0]}"
    assert checked >= KILL_TRIALS // 10, "too few kills landed after a commit to mean anything"
    for i, prefix in enumerate(prefixes):  # the next uninterrupted re-queue sweeps what killed writers left
        requeue(output_dir, prefix, f"last-{i}")
        folder = output_dir / prefix.split("/")[0]
        assert validate_run(folder).ok
        assert _temps(folder) == []


def test_a_new_marker_withdraws_the_run_it_replaces(output_dir: Path) -> None:
    """Between a re-queued prompt's marker and its collector, the folder is 'not complete', not a mixed run."""
    requeue(output_dir, "shot/frame", "prompt-1")
    folder = output_dir / "shot"
    assert validate_run(folder).ok
    images = np.random.default_rng(1).random((2, 8, 8, 3), dtype=np.float32)
    write_frames_with_marker(images, output_dir, "shot/frame", context=SceneContext(prompt_id="prompt-2"))
    assert not (folder / ARTIFACT_METADATA_NAME).exists() and not (folder / RUN_SUMMARY_NAME).exists()
    report = validate_run(folder)
    assert report.unreadable and "not complete" in report.render_text(problems_only=True)


def test_a_marker_of_another_prefix_leaves_the_run_alone(output_dir: Path) -> None:
    requeue(output_dir, "shot/frame", "prompt-1")
    images = np.random.default_rng(1).random((1, 8, 8, 3), dtype=np.float32)
    write_frames_with_marker(images, output_dir, "shot/matte", context=SceneContext(prompt_id="prompt-2"))
    assert validate_run(output_dir / "shot").ok


def test_stale_run_temps_are_swept_by_the_next_run_write(output_dir: Path) -> None:
    requeue(output_dir, "shot/frame", "prompt-1")
    folder = output_dir / "shot"
    for name in (ARTIFACT_METADATA_NAME, RUN_SUMMARY_NAME, "s01.telemetry.json"):
        (folder / f".{name}.0123456789ab{TEMP_SUFFIX}").write_text("{", "utf-8")  # a killed writer's, seconds old
    requeue(output_dir, "shot/frame", "prompt-2")
    assert _temps(folder) == []


def test_a_rerun_of_the_runner_withdraws_its_folder_and_sweeps_it_first(tmp_path: Path, output_dir: Path) -> None:
    """A headless RUN_DIR written again is 'not complete' from the first scene on, and dead writers' temps go."""
    from fake_comfy import FakeComfy, Scenario
    from scene_telemetry.comfy_api.client import ComfyClient
    from scene_telemetry.runner.policy import QueuePolicy
    from scene_telemetry.runner.runner import STATE_FILE, Runner, RunOptions
    from scene_telemetry.runner.scenes import MARKER_CLASS, Scene, parse_mapping

    workflow = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 2, "color": 0}},
        "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": 1, "strength": 0.5}},
        "3": {"class_type": MARKER_CLASS, "inputs": {"images": ["2", 0], "filename_prefix": "x/frame", "scene_id": ""}},
    }
    policy = QueuePolicy(5.0, 0.05, 0, 0.5, 1)
    run_dir = tmp_path / "run"
    seen: list[tuple[bool, list[str]]] = []

    def on_event(event: dict[str, object]) -> None:
        if event["event"] == "scene_start":
            seen.append(((run_dir / ARTIFACT_METADATA_NAME).exists(), _temps(run_dir)))

    with FakeComfy(Scenario(), output_dir=output_dir) as fake:
        for run_id in ("r1", "r2"):
            options = RunOptions(fake.url, run_dir, policy, run_id, output_dir, gpu_snapshots=False)
            runner = Runner(ComfyClient(fake.url, request_timeout_s=2.0), workflow, parse_mapping({}), options)
            runner.on_event = on_event
            result = runner.run([Scene("a", {})])
            assert result.ok and validate_run(run_dir, output_dir=output_dir).ok
            for name in (ARTIFACT_METADATA_NAME, STATE_FILE):  # what a killed runner leaves behind
                (run_dir / f".{name}.0123456789ab{TEMP_SUFFIX}").write_text("{", "utf-8")
    assert seen == [(False, []), (False, [])]
