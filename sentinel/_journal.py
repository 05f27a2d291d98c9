"""The sentinel's state journal: what was marked, so restarts lose nothing and repeat nothing.

One small JSON document, replaced atomically (telemetry's atomic writer) after each
round of markers. Per group it keeps the highest counter marked and the newest
modification time among marked files: a file is already marked when both its
counter and its mtime are at or below them (a counter that restarted after files
were deleted is new again because its mtime is newer). Server mode also keeps the
prompt ids already handled, newest last, capped like ComfyUI's history.

A marker is committed *before* the journal records it. A crash in between leaves
the files looking unmarked; the next start finds them listed by the marker on disk
and records them without writing a second marker.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..telemetry import InvalidInputError, atomic_write_text, read_bounded
from ._naming import GroupKey

logger = logging.getLogger(__name__)

"""Default journal file in the output directory (hidden: the sentinel never groups it)."""
DOCUMENT = "scene-telemetry-sentinel-state"
VERSION = 1
MAX_PROMPTS = 10_000
"""ComfyUI keeps at most 10,000 history entries; remembering more prompt ids buys nothing."""
MAX_STATE_BYTES = 64 * 1024 * 1024


@dataclass
class Marked:
    """What was marked in one group."""

    counter: int
    mtime_ns: int

    def covers(self, counter: int, mtime_ns: int) -> bool:
        return counter <= self.counter and mtime_ns <= self.mtime_ns


class Journal:
    """In-memory state plus :meth:`save`; load with :meth:`load`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.groups: dict[GroupKey, Marked] = {}
        self.prompts: OrderedDict[str, str] = OrderedDict()
        self.dirty = False
        self._save_failing = False

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Journal:
        """Read the journal at *path*; a missing file is an empty journal, a damaged one an error."""
        journal = cls(Path(path))
        try:
            size = journal.path.stat().st_size
        except FileNotFoundError:
            return journal
        except OSError as exc:
            raise InvalidInputError(
                f"cannot read the sentinel state: {exc.strerror or exc}", path=journal.path
            ) from None
        if size > MAX_STATE_BYTES:
            raise InvalidInputError(f"sentinel state is {size} bytes: not a state file", path=journal.path)
        try:
            data = json.loads(read_bounded(journal.path, MAX_STATE_BYTES).decode("utf-8"))  # never blocks on a FIFO
        except (InvalidInputError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            reason = exc.message if isinstance(exc, InvalidInputError) else str(exc)
            raise InvalidInputError(
                f"sentinel state is unreadable ({reason}); move it away to start afresh", path=journal.path
            ) from None
        if not isinstance(data, dict) or data.get("Document") != DOCUMENT or data.get("Version") != VERSION:
            raise InvalidInputError("not a scene-telemetry sentinel state file (Document/Version)", path=journal.path)
        try:
            journal._restore(data)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: a Counter of Infinity
            raise InvalidInputError(f"sentinel state has a malformed entry ({exc!r})", path=journal.path) from None
        return journal

    def _restore(self, data: dict[str, Any]) -> None:
        for entry in data.get("Groups", []):
            key = GroupKey(str(entry["Folder"]), str(entry["Prefix"]))
            self.groups[key] = Marked(int(entry["Counter"]), int(entry["MtimeNs"]))
        for prompt_id, outcome in data.get("Prompts", []):
            self.prompts[str(prompt_id)] = str(outcome)

    def is_marked(self, key: GroupKey, counter: int, mtime_ns: int) -> bool:
        marked = self.groups.get(key)
        return marked is not None and marked.covers(counter, mtime_ns)

    def record_group(self, key: GroupKey, counter: int, mtime_ns: int) -> None:
        old = self.groups.get(key)
        if old is None:
            self.groups[key] = Marked(counter, mtime_ns)
        else:
            self.groups[key] = Marked(max(old.counter, counter), max(old.mtime_ns, mtime_ns))
        self.dirty = True

    def record_prompt(self, prompt_id: str, outcome: str) -> None:
        self.prompts[prompt_id] = outcome
        self.prompts.move_to_end(prompt_id)
        while len(self.prompts) > MAX_PROMPTS:
            self.prompts.popitem(last=False)
        self.dirty = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "Document": DOCUMENT,
            "Version": VERSION,
            "Groups": [
                {"Folder": k.folder, "Prefix": k.prefix, "Counter": m.counter, "MtimeNs": m.mtime_ns}
                for k, m in sorted(self.groups.items())
            ],
            "Prompts": [[p, o] for p, o in self.prompts.items()],
        }

    def save(self) -> None:
        """Atomically replace the journal file if anything changed (raises OSError when it cannot)."""
        if not self.dirty:
            return
        atomic_write_text(self.path, json.dumps(self.to_dict(), separators=(",", ":")) + "\n")
        self.dirty = False

    def try_save(self) -> bool:
        """:meth:`save` from a service loop: a failure is logged (once per streak) and retried at the next save."""
        try:
            self.save()
        except OSError as exc:
            if not self._save_failing:
                logger.error("cannot write the sentinel state %s (%s); will retry", self.path, exc.strerror or exc)
            self._save_failing = True
            return False
        if self._save_failing:
            logger.info("sentinel state %s written again", self.path)
        self._save_failing = False
        return True

    def check_writable(self) -> None:
        """Write the journal now, so that an unwritable state file is one clear error at start-up."""
        self.dirty = True
        try:
            self.save()
        except OSError as exc:
            raise InvalidInputError(
                f"cannot write the sentinel state: {exc.strerror or exc} (choose another file with --state)",
                path=self.path,
            ) from None
