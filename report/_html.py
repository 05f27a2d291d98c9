"""The page: one self-contained HTML file (styles, uPlot and our script inlined; frames as data URIs).

Every value that comes from the run folder goes through :func:`esc` (text and
attributes) or :func:`script_json` (the plot data, read by the page's script with
``JSON.parse`` and only ever put on the page as text or canvas drawing).
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..telemetry import PACKAGE_VERSION, CheckRow, ValidationReport
from ._load import RunView, SceneRow, as_map
from ._plots import exit_label, plot_data
from ._sheet import Sheet, Thumb

MAX_CHECK_ROWS = 300
"""Failed (and, separately, warned) checks listed on the page; the rest are counted."""

POLICY_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("MaxWaitSeconds", "history max wait", " s"),
    ("PollIntervalSeconds", "poll interval", " s"),
    ("PollLimit", "pollLimit", ""),
    ("HistoryAttemptLimit", "history attempt limit", ""),
    ("PostExecutionTimeoutSeconds", "post-execution timeout", " s"),
    ("SceneRetryBudget", "scene retry budget", ""),
)

DASH = "—"

DETAIL_CHARS = 300
"""ExitDetail shown in the table (the cell's tooltip holds up to DETAIL_TITLE_CHARS): long tracebacks must not
multiply the page's size by the number of scenes."""
DETAIL_TITLE_CHARS = 2000


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def esc(value: Any) -> str:
    """HTML-escaped text of *value* (quotes too, so it is safe in attributes); None is a dash."""
    return DASH if value is None else html.escape(str(value), quote=True)


def script_json(data: Any) -> str:
    """JSON for a ``<script type="application/json">`` block: no ``<``, ``>`` or ``&`` can end it."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


@cache
def _asset(name: str) -> str:
    return resources.files(__package__ or "scene_telemetry.report").joinpath(name).read_text("utf-8")


def _inline_script(source: str) -> str:
    """Our own and the vendored script, made safe to inline (a literal ``</script`` would end the tag)."""
    return source.replace("</script", "<\\/script")


def href(target: Path, page_dir: Path) -> str:
    """A link to *target* relative to the page's folder (escaped for an attribute)."""
    try:
        relative = Path(os.path.relpath(target, page_dir)).as_posix()
    except ValueError:  # another Windows drive
        return esc(target.resolve().as_uri())
    return esc(quote(os.fsencode(relative)))  # the name's bytes: a name that is not UTF-8 still links to its file


def _fmt_seconds(value: float | None) -> str:
    return DASH if value is None else f"{value:,.3f}"


def _fmt_int(value: int | None) -> str:
    return DASH if value is None else f"{value:,}"


def _fmt_bytes(value: int | None) -> str:
    if value is None:
        return DASH
    size = float(value)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{value:,} bytes" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{value:,} bytes"


def _td(text: str, sort: float | str | None = None, cls: str = "", title: str | None = None) -> str:
    attrs = f' data-v="{esc(sort)}"' if sort is not None else ' data-v=""'
    attrs += f' class="{cls}"' if cls else ""
    attrs += f' title="{esc(title)}"' if title else ""
    return f"<td{attrs}>{text}</td>"


# --- sections --------------------------------------------------------------------------------------------------------


def _verdict(report: ValidationReport, view: RunView) -> str:
    counts = report.counts()
    state = "passed" if report.ok else "failed"
    word = "PASSED" if report.ok else ("UNREADABLE INPUT" if report.unreadable else "FAILED")
    parts = [
        f'<section id="verdict" class="verdict {state}"><h2>Validator: <span class="word">{word}</span></h2>',
        f"<p>{counts['pass']:,} passed · <b>{counts['fail']:,} failed</b> · {counts['error']:,} unreadable · "
        f"{counts['warn']:,} warning(s) · {counts['skip']:,} skipped "
        "(<code>scene-telemetry validate</code> on this folder)</p>",
    ]
    if view.missing:
        items = "".join(f"<li>{esc(m)}</li>" for m in view.missing)
        parts.append(f'<div class="missing"><h3>Missing or unreadable</h3><ul>{items}</ul></div>')
    failures = report.failures
    if failures:
        parts.append(_check_table(failures, "failed", "Failed checks"))
    warnings = [r for r in report.rows if r.verdict == "warn"]
    if warnings:
        parts.append(f"<details><summary>{len(warnings):,} warning(s)</summary>")
        parts.append(_check_table(warnings, "warn", "Warnings") + "</details>")
    parts.append("</section>")
    return "".join(parts)


def _check_table(rows: Sequence[CheckRow], cls: str, caption: str) -> str:
    head = "<tr><th>Check</th><th>Scene</th><th>Field</th><th>Problem</th><th>Summary</th><th>Metadata</th></tr>"
    body = [
        f'<tr class="{cls}"><td>{esc(r.check)}</td><td>{esc(r.scene) if r.scene else ""}</td><td>{esc(r.field)}</td>'
        f"<td>{esc(r.message)}{_file_note(r.file)}</td><td>{esc(r.summary) if r.summary is not None else ''}</td>"
        f"<td>{esc(r.metadata) if r.metadata is not None else ''}</td></tr>"
        for r in rows[:MAX_CHECK_ROWS]
    ]
    more = f"<p>… and {len(rows) - MAX_CHECK_ROWS:,} more.</p>" if len(rows) > MAX_CHECK_ROWS else ""
    return (
        f'<div class="checkbox"><table class="checks {cls}"><caption>{caption} ({len(rows):,})</caption>{head}'
        f"{''.join(body)}</table>{more}</div>"
    )


def _file_note(file: str | None) -> str:
    return f' <span class="file">({esc(Path(file).name)})</span>' if file else ""


def _cards(view: RunView) -> str:
    scenes = view.scenes
    failed = sum(1 for s in scenes if s.ok is False)
    durations = [s.duration_s for s in scenes if s.duration_s is not None]
    peaks = [v for s in scenes for v in (s.vram_peak, s.vram_after, s.vram_before) if v is not None]
    cards = [
        ("Scenes", f"{len(scenes):,}"),
        ("Failed", f"{failed:,}"),
        ("Scene time", f"{sum(durations):,.1f} s" if durations else DASH),
        ("Frames", f"{sum(s.frames or 0 for s in scenes):,}"),
        ("Frame bytes", _fmt_bytes(sum(s.frame_bytes or 0 for s in scenes))),
        ("Highest VRAM", f"{max(peaks):,} MiB" if peaks else DASH),
    ]
    items = "".join(
        f'<div class="card{" bad" if label == "Failed" and failed else ""}"><span>{label}</span><b>{value}</b></div>'
        for label, value in cards
    )
    return f'<section class="cards">{items}</section>'


def _plots(data: Mapping[str, Any]) -> str:
    blocks = [
        ("plot-duration", "Duration per scene (s)"),
        ("plot-memory", "Memory per scene (MiB): before / after / peak against the total"),
        ("plot-exits", "Exit reasons"),
    ]
    if data.get("timeline"):
        blocks.append(("plot-timeline", "Timeline: one lane per server"))
    figures = "".join(
        f'<figure class="plot"><figcaption>{caption}</figcaption><div id="{ident}" class="chart"></div></figure>'
        for ident, caption in blocks
    )
    return f'<section id="plots"><h2>Plots</h2><div class="plots">{figures}</div></section>'


TABLE_HEAD: tuple[tuple[str, str, str], ...] = (
    ("#", "n", "Run order"),
    ("Scene", "s", "Scene id (links to its telemetry file)"),
    ("Exit", "s", "HistoryExitReason"),
    ("Attempts", "n", "SceneAttempts (HistoryAttempts in the tooltip)"),
    ("Duration s", "n", "DurationSeconds"),
    ("Queue wait s", "n", "ExecutionStartedAt - QueueStart"),
    ("Before MiB", "n", "VRAM used before (host RAM on CPU, marked RAM)"),
    ("After MiB", "n", "VRAM used after (host RAM on CPU)"),
    ("Peak MiB", "n", "GPU.VramPeakMB where recorded (on CPU: the process's System.RssPeakMB, marked RSS)"),
    ("Total MiB", "n", "Device total (host RAM total on CPU)"),
    ("Server", "s", "Farm server or instance"),
    ("Frames", "n", "Frames.Count"),
    ("Bytes", "n", "Frames.TotalBytes"),
    ("Marker", "s", "Marker Source: node, runner-forced, sentinel (links to the marker)"),
    ("Detail", "s", "ExitDetail and what could not be read"),
)


def _scene_table(view: RunView, page_dir: Path) -> str:
    has_server = any(s.server for s in view.scenes)
    head = [h for h in TABLE_HEAD if has_server or h[0] != "Server"]
    ths = "".join(
        f'<th data-type="{kind}" title="{esc(tip)}" aria-sort="none"><button type="button">{name}</button></th>'
        for name, kind, tip in head
    )
    rows = "".join(_scene_tr(s, view, page_dir, has_server) for s in view.scenes)
    return (
        f'<section id="scenes"><h2>Scenes</h2><p class="hint">Click a column to sort.</p>'
        f'<div class="scroll"><table id="scene-table" class="sortable"><thead><tr>{ths}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div></section>"
    )


def _memory_cells(s: SceneRow) -> list[str]:
    if s.on_cpu:
        tags = ("RAM", "RAM", "RSS", "RAM")
        values = (s.ram_before, s.ram_after, s.ram_peak, s.ram_total)
        return [
            _td(_fmt_int(v) + (f' <span class="tag">{tag}</span>' if v is not None else ""), v)
            for v, tag in zip(values, tags, strict=True)
        ]
    proc = ' <span class="tag" title="VramBasis process: torch reserved memory of ComfyUI">proc</span>'
    before, after = (
        _fmt_int(v) + (proc if s.basis == "process" and v is not None else "") for v in (s.vram_before, s.vram_after)
    )
    return [
        _td(before, s.vram_before),
        _td(after, s.vram_after),
        *(_td(_fmt_int(v), v) for v in (s.vram_peak, s.vram_total)),
    ]


def _attempts_title(s: SceneRow) -> str | None:
    return None if s.history_attempts is None else f"{s.history_attempts} GET /history request(s)"


def _scene_tr(s: SceneRow, view: RunView, page_dir: Path, has_server: bool) -> str:
    scene = esc(s.scene_id)
    if s.telemetry_path is not None:
        scene = f'<a href="{href(s.telemetry_path, page_dir)}">{scene}</a>'
    label = exit_label(s, view)
    exit_cls = "ok" if s.ok else ("bad" if s.ok is False else "")
    marker = esc(s.marker_source) if s.marker_source else DASH
    if s.marker_path is not None:
        marker = f'<a href="{href(s.marker_path, page_dir)}">{marker}</a>'
    detail = " · ".join([*([s.exit_detail] if s.exit_detail else []), *s.problems])
    cells = [
        _td(str(s.index + 1), s.index + 1),
        _td(scene, s.scene_id),
        _td(f'<span class="badge {exit_cls}">{esc(label)}</span>', label),
        _td(_fmt_int(s.attempts), s.attempts, title=_attempts_title(s)),
        _td(_fmt_seconds(s.duration_s), s.duration_s),
        _td(_fmt_seconds(s.queue_wait_s), s.queue_wait_s),
        *_memory_cells(s),
        *([_td(esc(s.server) if s.server else DASH, s.server, title=s.server_detail)] if has_server else []),
        _td(_fmt_int(s.frames), s.frames),
        _td(_fmt_bytes(s.frame_bytes), s.frame_bytes),
        _td(marker, s.marker_source),
        _td(esc(_cut(detail, DETAIL_CHARS)), _cut(detail, 200), "detail", _cut(detail, DETAIL_TITLE_CHARS) or None),
    ]
    return f'<tr class="{"failed" if s.ok is False else ""}">{"".join(cells)}</tr>'


def _contact_sheet(sheet: Sheet) -> str:
    if not sheet.total:
        return (
            '<section id="sheet"><h2>Contact sheet</h2>'
            "<p>No scene has frames listed by a readable marker.</p></section>"
        )
    note = f"First, middle and last frame of {len(sheet.scenes):,} of {sheet.total:,} scene(s) with frames"
    if len(sheet.scenes) < sheet.total:
        note += " (evenly spread over the run: the sheet is capped so that the page stays small)"
    if sheet.dropped:
        note += f"; {sheet.dropped:,} thumbnail(s) left out by the size cap"
    cells = []
    for entry in sheet.scenes:
        frames = "".join(_thumb_html(entry.scene.scene_id, t) for t in entry.thumbs)
        cells.append(f'<div class="strip"><h4>{esc(entry.scene.scene_id)}</h4><div class="frames">{frames}</div></div>')
    return f'<section id="sheet"><h2>Contact sheet</h2><p class="hint">{note}.</p>{"".join(cells)}</section>'


def _thumb_html(scene_id: str, thumb: Thumb) -> str:
    caption = f"{esc(thumb.position)}: {esc(thumb.name)}"
    if thumb.data_uri is None:
        return (
            f'<figure class="thumb missing"><div class="nothumb">{esc(thumb.note)}</div>'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    alt = esc(f"{scene_id} {thumb.position} frame {thumb.name}")
    return (
        f'<figure class="thumb"><img src="{thumb.data_uri}" width="{thumb.width}" height="{thumb.height}" '
        f'alt="{alt}" loading="lazy"><figcaption>{caption}</figcaption></figure>'
    )


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _policy_text(scenes: Iterable[Mapping[str, Any]]) -> list[str]:
    seen: list[str] = []
    for doc in scenes:
        parts = [f"{label} {_shown(doc[key])}{unit}" for key, label, unit in POLICY_FIELDS if doc.get(key) is not None]
        text = " · ".join(parts)
        if text and text not in seen:
            seen.append(text)
    return seen


def _facts(view: RunView, page_dir: Path, report: ValidationReport) -> str:
    meta = as_map(view.metadata)
    versions = as_map(meta.get("Versions"))
    docs = [d for d in meta.get("Scenes", []) if isinstance(d, Mapping)] if isinstance(meta.get("Scenes"), list) else []
    policies = _policy_text(docs) or ["none recorded (an editor run has no headless runner)"]
    devices = sorted({s.device for s in view.scenes if s.device})
    facts: list[tuple[str, str]] = [
        ("Run folder", esc(view.run_dir)),
        ("Kind", esc(view.kind)),
        ("RunId", esc(meta.get("RunId"))),
        ("Writer", esc(meta.get("Writer"))),
        ("Created", esc(meta.get("CreatedAt"))),
        ("Scenes", f"{esc(meta.get('SceneCount'))} in the metadata, {len(view.scenes):,} shown"),
        ("Queue policy", "<br>".join(esc(p) for p in policies[:10])),
        ("Devices", esc(", ".join(devices)) if devices else DASH),
        (
            "Versions",
            " · ".join(
                f"{name} {esc(versions.get(key))}"
                for key, name in (("Package", "scene-telemetry"), ("ComfyUI", "ComfyUI"), ("Python", "Python"))
            )
            + f" · torch {esc(versions.get('Torch'))}",
        ),
        ("Files", _file_links(view, page_dir)),
        ("Validator", esc(report.verdict_line())),
    ]
    items = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)
    return f'<section id="facts"><h2>Run facts</h2><dl>{items}</dl></section>'


def _file_links(view: RunView, page_dir: Path) -> str:
    links = []
    for path in (view.metadata_path, view.summary_path):
        if path is not None:
            links.append(f'<a href="{href(path, page_dir)}">{esc(path.name)}</a>')
    telemetry = sum(1 for s in view.scenes if s.telemetry_path is not None)
    markers = sum(1 for s in view.scenes if s.marker_path is not None)
    links.append(f"{telemetry:,} telemetry file(s) and {markers:,} marker(s): linked from the scenes table")
    return " · ".join(links)


# --- the page --------------------------------------------------------------------------------------------------------


def render_page(view: RunView, report: ValidationReport, sheet: Sheet, page_path: Path, generated_at: str) -> str:
    """The whole HTML document."""
    page_dir = page_path.parent
    data = plot_data(view)
    title = f"Run report: {view.run_dir.name}"
    run_id = as_map(view.metadata).get("RunId")
    body = "".join(
        [
            f"<header><h1>{esc(title)}</h1><p>{esc(view.kind)}"
            f"{' · RunId ' + esc(run_id) if run_id else ''} · {len(view.scenes):,} scene(s)</p></header>",
            _verdict(report, view),
            _cards(view),
            _plots(data),
            _scene_table(view, page_dir),
            _contact_sheet(sheet),
            _facts(view, page_dir, report),
            f"<footer>scene-telemetry {esc(PACKAGE_VERSION)} · report written {esc(generated_at)} · "
            "plots: uPlot 1.6.32 (MIT), inlined</footer>",
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title>"
        f"<style>{_asset('vendor/uPlot.min.css')}\n{_asset('static/report.css')}</style></head>"
        f"<body>{body}"
        f'<script type="application/json" id="report-data">{script_json(data)}</script>'
        f"<script>{_inline_script(_asset('vendor/uPlot.iife.min.js'))}</script>"
        f"<script>{_inline_script(_asset('static/report.js'))}</script>"
        "</body></html>\n"
    )
