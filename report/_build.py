"""Read, validate, render, write: ``scene-telemetry report`` and ``run --report`` / ``demo`` call this."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..telemetry import InvalidInputError, ValidationReport, atomic_write_bytes, validate_run
from ._html import render_page
from ._load import RunView, load_run
from ._sheet import start_sheet

logger = logging.getLogger(__name__)

REPORT_NAME = "report.html"
"""Default file name, inside the run folder."""

THUMBNAIL_WORKERS = 2

PAGE_SUFFIXES: frozenset[str] = frozenset({".html", ".htm"})
"""The page is only written to an HTML file name, so that ``-o`` can never overwrite a run's data file."""


@dataclass(frozen=True)
class ReportResult:
    """Where the page went and what it says."""

    path: Path
    view: RunView
    validation: ValidationReport
    bytes: int

    @property
    def ok(self) -> bool:
        """The validator passed (``scene-telemetry report`` exits 0)."""
        return self.validation.ok


def render_report(
    run_dir: str | os.PathLike[str],
    *,
    page_path: str | os.PathLike[str] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
) -> tuple[str, RunView, ValidationReport]:
    """The HTML of *run_dir*'s report (links relative to *page_path*); raises ``NothingReadable``.

    The contact sheet's thumbnails are made on a small thread pool while the
    validator runs on this thread.
    """
    view = load_run(run_dir, output_dir=output_dir)
    page = Path(page_path) if page_path is not None else view.run_dir / REPORT_NAME
    with ThreadPoolExecutor(max_workers=THUMBNAIL_WORKERS, thread_name_prefix="report-thumbs") as pool:
        pending = start_sheet(view.scenes, pool)
        validation = validate_run(view.run_dir, output_dir=output_dir)
        sheet = pending.result()
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return render_page(view, validation, sheet, page.absolute(), generated), view, validation


def write_report(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    output_dir: str | os.PathLike[str] | None = None,
) -> ReportResult:
    """Write the report of *run_dir* atomically to *out* (default ``RUN_DIR/report.html``).

    Raises ``NothingReadable`` when the folder holds nothing to report on,
    ``InvalidInputError`` when *out* is not an ``.html`` file name, and ``OSError``
    when the page cannot be written.
    """
    target = Path(out) if out is not None else Path(run_dir) / REPORT_NAME
    if target.suffix.lower() not in PAGE_SUFFIXES:  # -o artifact-metadata.json must not replace the run's data
        raise InvalidInputError(f"the report's file name must end in .html, not {target.name!r}", path=target)
    text, view, validation = render_report(run_dir, page_path=target, output_dir=output_dir)
    page = text.encode("utf-8", "replace")  # a file name that is not UTF-8 is shown with '?', never a crash
    atomic_write_bytes(target, page)
    logger.info("report written: %s (%d scenes)", target, len(view.scenes))
    return ReportResult(target, view, validation, len(page))
