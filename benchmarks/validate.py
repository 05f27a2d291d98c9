"""Validator throughput: 10,000 artifact-metadata.json files, then whole run folders.

    .venv/bin/python benchmarks/validate.py [--files 10000] [--runs 300] [--json]

1. ``--files`` copies of a real one-scene metadata document (written by the
   collector on synthetic frames, each copy with its own RunId) are written to a
   temp folder, then each is read with the validator's guarded reader and checked
   against contract v1 (``validate_metadata_file``; the schema is compiled once),
   twice side by side: jsonschema alone (the path before the compiled fast path,
   ``_fast_contract`` switched off) and the shipped path (compiled check first,
   jsonschema only for a document it does not accept).
   Target (issue 8): 10,000 files in <= 1.5 s on a 2-core machine; the exit status
   is 1 when missed. The load average is printed: other work on the cores slows both.
2. ``--runs`` full run folders (metadata, summary, telemetry file, marker, 3 frames)
   through ``validate_run``: every check, for information.
Writing the inputs is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from run_factory import make_run  # noqa: E402
from scene_telemetry.telemetry import _fast_contract  # noqa: E402
from scene_telemetry.telemetry._validate import validate_metadata_file, validate_run  # noqa: E402

TARGET_FILES = 10_000
TARGET_SECONDS = 1.5


def write_metadata_files(root: Path, count: int) -> list[Path]:
    template = make_run(root / "template").metadata()
    folder = root / "metadata"
    folder.mkdir()
    paths = []
    for index in range(count):
        template["RunId"] = f"run-{index:05d}"
        path = folder / f"{index:05d}.json"
        path.write_text(json.dumps(template, indent=2), "utf-8")
        paths.append(path)
    return paths


def jsonschema_only() -> Callable[[], None]:
    """Switch the compiled fast path off (every document goes to jsonschema); returns the undo."""
    compiled = _fast_contract.compiled_check
    _fast_contract.compiled_check = lambda kind: None  # type: ignore[assignment]

    def undo() -> None:
        _fast_contract.compiled_check = compiled

    return undo


def bench_metadata_files(paths: list[Path]) -> float:
    validate_metadata_file(paths[0])  # compile the schema outside the timing, as a long-lived process would
    start = time.perf_counter()
    failed = sum(1 for path in paths if any(row.verdict in ("fail", "error") for row in validate_metadata_file(path)))
    elapsed = time.perf_counter() - start
    if failed:
        raise SystemExit(f"{failed} valid file(s) reported invalid: the benchmark measured the wrong thing")
    return elapsed


def bench_runs(root: Path, count: int) -> float:
    runs = [make_run(root / "runs", scene_id=f"scene-{i:04d}").run_dir for i in range(count)]
    start = time.perf_counter()
    failed = sum(1 for run_dir in runs if not validate_run(run_dir).ok)
    elapsed = time.perf_counter() - start
    if failed:
        raise SystemExit(f"{failed} good run(s) reported not ok")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=TARGET_FILES)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="st-bench-validate-") as tmp:
        paths = write_metadata_files(Path(tmp), args.files)
        undo = jsonschema_only()
        try:
            baseline_s = bench_metadata_files(paths)
        finally:
            undo()
        files_s = bench_metadata_files(paths)
        runs_s = bench_runs(Path(tmp), args.runs) if args.runs else 0.0
    met = args.files < TARGET_FILES or files_s <= TARGET_SECONDS
    result = {
        "metadata_files": args.files,
        "jsonschema_only_seconds": round(baseline_s, 3),
        "metadata_seconds": round(files_s, 3),
        "speedup": round(baseline_s / files_s, 1),
        "metadata_files_per_s": round(args.files / files_s, 1),
        "run_folders": args.runs,
        "run_seconds": round(runs_s, 3),
        "run_folders_per_s": round(args.runs / runs_s, 1) if runs_s else None,
        "target": f"{TARGET_FILES} metadata files <= {TARGET_SECONDS} s",
        "target_met": met,
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"load average (1 min) before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
        )
        print(f"metadata files: {args.files}")
        print(f"  jsonschema only (before): {baseline_s:6.2f} s")
        print(
            f"  compiled check first    : {files_s:6.2f} s ({result['metadata_files_per_s']} files/s, "
            f"{result['speedup']}x)"
        )
        if args.runs:
            print(f"full run folders: {args.runs} in {runs_s:.2f} s ({result['run_folders_per_s']} runs/s)")
        print(f"target {result['target']}: {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
