"""The run report: one self-contained HTML page from a run folder (``scene-telemetry report``).

Pure rendering: it reads the folder through the telemetry library's public API
(``validate_run``, ``read_marker``, ``read_json``), never writes into it except
the page itself, and nothing runs at import time. Plots are drawn in the browser
by the vendored uPlot (MIT, ``report/vendor/``), inlined into the page with our
script, so the page works offline.
"""

from ._build import REPORT_NAME, ReportResult, render_report, write_report
from ._load import NothingReadable, RunView, SceneRow, load_run

__all__ = [
    "REPORT_NAME",
    "NothingReadable",
    "ReportResult",
    "RunView",
    "SceneRow",
    "load_run",
    "render_report",
    "write_report",
]
