"""Validation rows and the report that collects them (the validator's only output)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Verdict = Literal["pass", "fail", "warn", "skip", "error"]
"""pass; fail (disagreement or contract violation); warn (accepted, worth a look);
skip (does not apply); error (a file cannot be read at all)."""

FAILING: frozenset[str] = frozenset({"fail", "error"})
_ORDER: dict[str, int] = {"error": 0, "fail": 1, "warn": 2, "pass": 3, "skip": 4}
SHORT_VALUE_CHARS = 60
_PROBLEMS: frozenset[str] = frozenset({"error", "fail", "warn"})


@dataclass(frozen=True)
class CheckRow:
    """One verdict about one field of one scene (scene None = the run as a whole)."""

    check: str
    scene: str | None
    field: str
    verdict: Verdict
    message: str = ""
    summary: str | None = None
    """The value as run-summary.txt (or the telemetry file) writes it."""
    metadata: str | None = None
    """The value as artifact-metadata.json holds it, rendered like the summary."""
    file: str | None = None
    labels: tuple[str, str] = ("summary", "metadata")
    """What ``summary`` and ``metadata`` hold in this row: ("telemetry", "metadata") for a telemetry file
    against its metadata entry, ("marker", "scene") for a marker against the scene's Frames."""


def row(
    check: str,
    scene: str | None,
    field: str,
    verdict: Verdict,
    message: str = "",
    *,
    summary: str | None = None,
    metadata: str | None = None,
    file: str | None = None,
    labels: tuple[str, str] = ("summary", "metadata"),
) -> CheckRow:
    """Shorthand for :class:`CheckRow` with the values as keywords."""
    return CheckRow(check, scene, field, verdict, message, summary, metadata, file, labels)


def short(value: str | None, limit: int = SHORT_VALUE_CHARS) -> str | None:
    """*value* cut to *limit* characters (reports stay readable with huge values)."""
    if value is None or len(value) <= limit:
        return value
    return value[: limit - 1] + "…"


@dataclass
class ValidationReport:
    """Every row of one validation; ``ok`` when nothing failed and every file was readable."""

    run_dir: str
    rows: list[CheckRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(r.verdict in FAILING for r in self.rows)

    @property
    def unreadable(self) -> bool:
        """Some input could not be read at all (exit code 2 of ``scene-telemetry validate``)."""
        return any(r.verdict == "error" for r in self.rows)

    @property
    def failures(self) -> list[CheckRow]:
        return [r for r in self.rows if r.verdict in FAILING]

    def counts(self) -> dict[str, int]:
        counts: Counter[str] = Counter(r.verdict for r in self.rows)
        return {verdict: counts.get(verdict, 0) for verdict in _ORDER}

    def verdict_line(self) -> str:
        """``OK``/``FAILED``/``UNREADABLE`` and the counts, on one line."""
        c = self.counts()
        state = "OK" if self.ok else "UNREADABLE" if self.unreadable else "FAILED"
        return (
            f"{state}: {c['pass']} passed, {c['fail']} failed, {c['error']} unreadable, "
            f"{c['warn']} warning(s), {c['skip']} skipped"
        )

    def to_dict(self, *, problems_only: bool = False) -> dict[str, Any]:
        """JSON-serialisable form (``scene-telemetry validate --json``); counts always cover every row."""
        rows = [r for r in self.rows if r.verdict in _PROBLEMS] if problems_only else self.rows
        return {
            "run_dir": self.run_dir,
            "ok": self.ok,
            "unreadable": self.unreadable,
            "counts": self.counts(),
            "rows": [asdict(r) for r in rows],
        }

    def render_text(self, *, problems_only: bool = False) -> str:
        """The verdict line, then one line per row, problems first."""
        rows = sorted(self.rows, key=lambda r: _ORDER[r.verdict])
        if problems_only:
            rows = [r for r in rows if r.verdict in _PROBLEMS]
        return "\n".join([f"{self.run_dir}: {self.verdict_line()}", *(_row_text(r) for r in rows)])


def _row_text(r: CheckRow) -> str:
    where = f"[{r.scene}] " if r.scene is not None else ""
    text = f"{r.verdict.upper():5} {r.check:17} {where}{r.field}"
    if r.summary is not None or r.metadata is not None:
        left, right = r.labels
        text += f": {left}={short(r.summary) or '-'} {right}={short(r.metadata) or '-'}"
    if r.message:
        text += f" - {r.message}"
    return text + (f" ({r.file})" if r.file else "")
