"""Start-up import cost of the ``scene-telemetry`` command, measured with ``python -X importtime``.

    .venv/bin/python benchmarks/startup.py [--repeats 7] [--top 15] [--before REV] [--json]

Each case runs in a fresh interpreter ``--repeats`` times; the import cost is the
sum of the top-level entries ``-X importtime`` prints (the interpreter's own
start-up, ``site`` and the editable-install finder excluded: they are paid by any
Python command). The cases, side by side in one run:

- ``--help``: import the CLI entry and build the full parser (every command registered).
- ``validate``/``wait``: the CLI entry and the parser for that command alone (``main``
  imports only the named command's module), plus the modules the command's run imports.
- the node code: ``from scene_telemetry.nodes import NODE_CLASS_MAPPINGS`` (what ComfyUI loads).
- with ``--before REV`` (e.g. the commit before the lazy imports), every case again on
  that revision's files (``git archive``), side by side.

Beside the ``-X importtime`` total (wall clock, so it grows with the load), the CPU
time the imports took (``time.process_time``) is printed: it moves less with load.

Target (issue 8): <= 60 ms for ``--help``, ``validate`` and ``wait``, and none of
numpy, PIL, torch or the node code imported (tests/test_startup.py asserts that part).
The medians move with the load average, printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

TARGET_MS = 60.0
HEAVY = ("numpy", "PIL", "torch")
LIGHT_NODE_MODULES = ("scene_telemetry.nodes", "scene_telemetry.nodes._names")
"""The node package itself and its node ids are light; any other module of it is node code."""
TARGETED = ("--help", "validate", "wait")
_ENTRY = (  # a revision before named_command built the full parser for every command line
    "import scene_telemetry.cli.main as m; "
    "m.build_parser(m.named_command({argv!r})) if hasattr(m, 'named_command') else m.build_parser()"
)
CASES: dict[str, str] = {
    "--help": _ENTRY.format(argv=["--help"]),
    "validate": _ENTRY.format(argv=["validate", "RUN_DIR"]) + "; import scene_telemetry.telemetry._validate",
    "wait": _ENTRY.format(argv=["wait", "X.done"])
    + "; import scene_telemetry.telemetry._wait, scene_telemetry.telemetry._marker",
    "node code": "from scene_telemetry.nodes import NODE_CLASS_MAPPINGS",
}
_NOT_OURS = ("site", "encodings", "_frozen_importlib_external", "zipimport")
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


REPO = Path(__file__).resolve().parents[1]


def import_times(code: str, path: str | None = None) -> tuple[float, float, dict[str, float], list[str]]:
    """(total ms, CPU ms, self ms per module, forbidden modules loaded) of one fresh interpreter running *code*."""
    probe = (
        f"import time; _cpu = time.process_time(); {code}; _cpu = time.process_time() - _cpu; import sys, json; "
        f"heavy = [m for m in sys.modules if m in {HEAVY!r} or m.startswith('scene_telemetry.nodes.')"
        f" and m not in {LIGHT_NODE_MODULES!r}]; print(json.dumps([_cpu * 1000, sorted(heavy)]))"
    )
    env = {**os.environ, "PYTHONPATH": path} if path else None  # sys.path comes before the editable install
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
    )
    total, own = 0.0, {}
    for line in done.stderr.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        self_us, cumulative_us, indent, name = match.groups()
        own[name] = int(self_us) / 1000
        top_level = len(indent) == 1
        if top_level and not name.startswith(_NOT_OURS) and not name.startswith("__editable__"):
            total += int(cumulative_us) / 1000
    cpu_ms, forbidden = json.loads(done.stdout.strip().splitlines()[-1])
    return total, cpu_ms, own, forbidden


def measure(
    code: str, repeats: int, path: str | None = None
) -> tuple[list[float], list[float], dict[str, float], list[str]]:
    """Import totals and CPU times of *repeats* runs, each module's lowest own time, the forbidden modules loaded."""
    totals: list[float] = []
    cpu: list[float] = []
    lowest: dict[str, float] = {}
    forbidden: list[str] = []
    for _ in range(repeats):
        total, cpu_ms, own, forbidden = import_times(code, path)
        totals.append(total)
        cpu.append(cpu_ms)
        lowest = {name: min(ms, lowest.get(name, ms)) for name, ms in own.items()}
    return totals, cpu, lowest, forbidden


def extract(rev: str, into: Path) -> str:
    """The files of *rev* under ``into/scene_telemetry`` (``git archive``); returns the folder for PYTHONPATH."""
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=REPO, capture_output=True, check=True).stdout
    target = into / "scene_telemetry"
    target.mkdir(parents=True)
    tar_path = into / "rev.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(target, filter="data")
    return str(into)


def summarise(totals: list[float], cpu: list[float], own: dict[str, float], forbidden: list[str], top: int) -> Any:
    return {
        "median_ms": round(statistics.median(totals), 1),
        "min_ms": round(min(totals), 1),
        "cpu_median_ms": round(statistics.median(cpu), 1),
        "forbidden_loaded": forbidden,
        "top": sorted(own.items(), key=lambda kv: -kv[1])[:top],
    }


def print_table(results: dict[str, Any]) -> None:
    print(f"{'case':<32} {'median ms':>10} {'min ms':>8} {'CPU ms':>8}  heavy modules loaded")
    for name, result in results.items():
        loaded = ", ".join(result["forbidden_loaded"]) or "none"
        row = f"{result['median_ms']:>10.1f} {result['min_ms']:>8.1f} {result['cpu_median_ms']:>8.1f}"
        print(f"{name:<32} {row}  {loaded}")
        for module, ms in result["top"]:
            print(f"    {ms:7.1f} ms  {module}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--top", type=int, default=0, help="also list the N modules with the highest own time")
    parser.add_argument("--before", metavar="REV", help="also measure this git revision, side by side")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="st-bench-startup-") as tmp:
        before_path = extract(args.before, Path(tmp)) if args.before else None
        for name, code in CASES.items():
            if before_path is not None:
                measured = measure(code, args.repeats, before_path)
                results[f"{name} @ {args.before}"] = summarise(*measured, args.top)
            results[name] = summarise(*measure(code, args.repeats), args.top)
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    met = all(r["median_ms"] <= TARGET_MS and not r["forbidden_loaded"] for n, r in results.items() if n in TARGETED)
    if args.json:
        print(json.dumps({"cases": results, "target_ms": TARGET_MS, "target_met": met, "load_average_1m": load}))
        return 0 if met else 1
    print(f"load average (1 min) before/after: {load[0]:.2f} / {load[1]:.2f} on {os.cpu_count()} CPUs")
    print_table(results)
    verdict = "met" if met else "MISSED"
    print(f"target: --help, validate and wait <= {TARGET_MS:.0f} ms with no numpy/PIL/torch/node code: {verdict}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
