"""The report in a real headless Chromium (Debian's ``chromium`` package, which .ci/run installs).

Driven by Playwright for Python without any browser download: ``executable_path``
points at the system Chromium. A missing browser is a failure with the install
command, never a skip. A screenshot of the demo run's report is kept as a test
artifact under ``$SCENE_TELEMETRY_ARTIFACTS`` (default: pytest's temp folder); its
path is printed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from report_runs import Layout, make_runner_run, write_unchecked
from scene_telemetry.cli.main import main
from scene_telemetry.report import REPORT_NAME, write_report

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


def chromium_path() -> str:
    """The system Chromium: $CHROMIUM, else `chromium` on PATH, else /usr/bin/chromium."""
    for candidate in (os.environ.get("CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "headless Chromium not found (looked at $CHROMIUM, PATH and /usr/bin/chromium): "
        "install Debian's package with `apt-get install -y chromium` (.ci/run does this)",
        pytrace=False,
    )


@pytest.fixture
def browser() -> Iterator[Browser]:
    """One Chromium per test (a shared one would outlive the thread-leak check of the first test)."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def open_page(browser: Browser, path: Path) -> tuple[Page, list[str]]:
    """Load *path*; return the page and every console error and uncaught exception."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.on("request", lambda req: None if req.url.startswith(("file:", "data:")) else problems.append(req.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, problems


INKED_PIXELS_JS = """(id) => Array.from(document.querySelectorAll('#' + id + ' canvas')).map((c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
  return n;
})"""


def inked(page: Page, plot_id: str, *, enough: int = 500, wait_s: float = 5.0) -> int:
    """Non-transparent canvas pixels of a plot, waiting up to *wait_s* for *enough* (a loaded machine draws late)."""
    deadline = time.monotonic() + wait_s
    while True:
        counts: list[int] = page.evaluate(INKED_PIXELS_JS, plot_id)
        if sum(counts) > enough or time.monotonic() > deadline:
            return sum(counts)
        page.wait_for_timeout(100)


def column(page: Page, index: int) -> list[str]:
    values: list[str] = page.evaluate(
        "(i) => Array.from(document.querySelectorAll('#scene-table tbody tr')).map((r) => r.cells[i].textContent)",
        index,
    )
    return values


def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("SCENE_TELEMETRY_ARTIFACTS")
    folder = Path(configured) if configured else tmp_path_factory.mktemp("artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_demo_report_renders_without_errors_and_draws_its_plots(browser, tmp_path, tmp_path_factory):
    assert main(["demo", "--out", str(tmp_path / "demo-output")]) == 0  # the README's first command
    page_path = tmp_path / "demo-output" / "demo-scene" / REPORT_NAME
    page, problems = open_page(browser, page_path)
    try:
        assert problems == []
        assert page.get_attribute("html", "data-plots-drawn") == "3"
        for plot_id in ("plot-duration", "plot-memory", "plot-exits"):
            assert inked(page, plot_id) > 500, plot_id
        assert page.locator("#verdict .word").text_content() == "PASSED"
        assert page.locator("#sheet img").count() == 3
        assert page.evaluate("Array.from(document.images).every((i) => i.complete && i.naturalWidth > 0)")
        shot = artifacts_dir(tmp_path_factory) / "demo-report.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the demo run's report: {shot}")  # noqa: T201 (the artifact's path, for CI logs)
        assert shot.stat().st_size > 10_000
    finally:
        page.close()


def test_farm_report_draws_the_timeline_and_the_table_sorts(browser, tmp_path):
    run_dir = make_runner_run(tmp_path / "run", Layout(scenes=12, servers=3, fail_every=5, peak=True))
    page, problems = open_page(browser, write_report(run_dir).path)
    try:
        assert problems == []
        assert page.get_attribute("html", "data-plots-drawn") == "4"
        assert inked(page, "plot-timeline") > 500
        original = column(page, 1)
        durations = lambda: [float(v) for v in column(page, 4)]  # noqa: E731
        page.click("#scene-table th:nth-child(5) button")
        assert durations() == sorted(durations())
        assert page.get_attribute("#scene-table th:nth-child(5)", "aria-sort") == "ascending"
        page.click("#scene-table th:nth-child(5) button")
        assert durations() == sorted(durations(), reverse=True)
        page.click("#scene-table th:nth-child(2) button")
        assert column(page, 1) == sorted(original)
        page.click("#scene-table th:nth-child(3) button")  # exit reason: the failures gather
        exits = column(page, 2)
        assert exits == sorted(exits, key=str.lower)
    finally:
        page.close()


def test_hostile_scene_id_and_exception_text_do_not_execute(browser, tmp_path):
    run_dir = make_runner_run(tmp_path / "run", Layout(scenes=2, fail_every=2))
    metadata: dict[str, Any] = json.loads((run_dir / "artifact-metadata.json").read_text("utf-8"))
    metadata["Scenes"][1].update(SceneId=HOSTILE, ExitDetail=HOSTILE)
    metadata["RunId"] = HOSTILE
    write_unchecked(run_dir, metadata)
    page, problems = open_page(browser, write_report(run_dir).path)
    try:
        assert page.evaluate("window.__pwned") is None
        assert problems == []
        assert page.locator("#scene-table img").count() == 0
        cells = column(page, 1)
        assert HOSTILE in cells  # shown as text
        assert page.locator("td.detail", has_text="window.__pwned=1").count() == 1
    finally:
        page.close()
