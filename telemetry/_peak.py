"""Peak memory of one scene: a bounded background sampler between the 'before' and 'after' snapshots.

Before/after snapshots miss the peak inside the sampler. The 'before' GPU
snapshot starts one daemon thread that reads the device's used VRAM (NVML,
device-wide, every ``interval_s``; torch ``mem_get_info`` where NVML does not
answer) and this process's resident memory (RSS), keeping only the maxima; the
'after' snapshot stops it and carries the peaks (``Peak`` in its snapshot) into
the contract's ``GPU.VramPeakMB`` / ``VramPeakSamples`` / ``VramPeakIntervalS``
and ``System.RssPeakMB``. torch's own per-process peak (``max_memory_allocated``
since the 'before' reset) is recorded beside it as ``GPU.TorchPeakAllocatedMB``.

The thread never outlives its scene by much (at most one sampler exists per
process):

- 'after' stops it (:func:`finish_peak_sampling`);
- every ``check_every_s`` it asks *ended* (the node passes "is this prompt
  still running on the server?") and ends itself when the prompt errored, was
  interrupted or finished without an 'after' snapshot;
- it ends itself after ``max_duration_s`` whatever happens;
- the next 'before' snapshot, or :func:`stop_stale_sampling` (the collector),
  stops a sampler left over from another prompt.

An 'after' snapshot whose sampler ended early, belonged to another prompt or
never started gets null peaks and a note saying why.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._gpu import DeviceHint, Reading, loaded_torch_hint, mib, probe_nvml, probe_torch

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 0.1
"""10 Hz: catches sampler steps (hundreds of ms each) at well under 1 % of a core."""
DEFAULT_MAX_DURATION_S = 6 * 3600.0
"""A scene longer than this loses its peak (null + note) rather than keep a thread alive forever."""
MAX_DURATION_ENV = "SCENE_TELEMETRY_PEAK_MAX_SECONDS"
DEFAULT_CHECK_EVERY_S = 0.5
"""How often the sampler asks whether its prompt is still running."""
_JOIN_TIMEOUT_S = 2.0

VramReader = Callable[[], int | None]
"""Returns used device memory in bytes (None: no figure this time)."""
EndedCheck = Callable[[], str | None]
"""Returns None while the scene's prompt runs, else why it ended ('error', 'interrupted', …)."""


@dataclass(frozen=True)
class PeakResult:
    """What one sampler saw. ``ended`` is None when it was stopped by its 'after' snapshot."""

    prompt_id: str | None
    source: str
    vram_peak_bytes: int | None
    rss_peak_bytes: int | None
    samples: int
    interval_s: float
    wall_s: float
    cpu_s: float
    ended: str | None


class PeakSampler:
    """One daemon thread keeping the maxima of *read_vram* and *read_rss* until stopped or ended."""

    def __init__(
        self,
        *,
        prompt_id: str | None,
        read_vram: VramReader | None,
        read_rss: VramReader | None,
        source: str,
        interval_s: float = DEFAULT_INTERVAL_S,
        max_duration_s: float = DEFAULT_MAX_DURATION_S,
        ended: EndedCheck | None = None,
        check_every_s: float = DEFAULT_CHECK_EVERY_S,
    ) -> None:
        if not (interval_s > 0 and max_duration_s > 0 and check_every_s > 0):
            raise ValueError("interval_s, max_duration_s and check_every_s must be positive")
        self.prompt_id = prompt_id
        self.source = source
        self.interval_s = interval_s
        self._read_vram = read_vram
        self._read_rss = read_rss
        self._max_duration_s = max_duration_s
        self._ended_check = ended
        self._check_every_s = check_every_s
        self._stop = threading.Event()
        self._vram_peak: int | None = None
        self._rss_peak: int | None = None
        self._samples = 0
        self._ended: str | None = None
        self._cpu_s = 0.0
        self._started = time.monotonic()
        self._stopped_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="scene-telemetry-peak", daemon=True)

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, why: str | None = None) -> PeakResult:
        """Stop the thread (joined) and return the peaks; *why* marks a stop by someone other than 'after'."""
        if why is not None and self._ended is None and self._thread.is_alive():
            self._ended = why
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(_JOIN_TIMEOUT_S)
            if self._thread.is_alive():  # a read hung (driver); the daemon thread ends when it returns
                logger.warning("peak sampler did not stop within %.0f s", _JOIN_TIMEOUT_S)
        end = self._stopped_at if self._stopped_at is not None else time.monotonic()
        return PeakResult(
            prompt_id=self.prompt_id,
            source=self.source,
            vram_peak_bytes=self._vram_peak,
            rss_peak_bytes=self._rss_peak,
            samples=self._samples,
            interval_s=self.interval_s,
            wall_s=end - self._started,
            cpu_s=self._cpu_s,
            ended=self._ended,
        )

    def _run(self) -> None:
        cpu_start = time.thread_time()
        deadline = self._started + self._max_duration_s
        next_check = self._started + self._check_every_s
        try:
            while True:
                self._sample()
                now = time.monotonic()
                if now >= deadline:
                    self._ended = f"the scene ran longer than the sampler's limit of {self._max_duration_s:g} s"
                    return
                if self._ended_check is not None and now >= next_check:
                    next_check = now + self._check_every_s
                    reason = self._safe_ended()
                    if reason is not None:
                        self._ended = reason
                        return
                if self._stop.wait(self.interval_s):
                    return
        finally:
            self._cpu_s = time.thread_time() - cpu_start
            self._stopped_at = time.monotonic()

    def _sample(self) -> None:
        vram = _safe_read(self._read_vram)
        rss = _safe_read(self._read_rss)
        if vram is not None and (self._vram_peak is None or vram > self._vram_peak):
            self._vram_peak = vram
        if rss is not None and (self._rss_peak is None or rss > self._rss_peak):
            self._rss_peak = rss
        self._samples += 1

    def _safe_ended(self) -> str | None:
        assert self._ended_check is not None
        try:
            return self._ended_check()
        except Exception:  # a failing check must not kill sampling; the other limits still apply
            logger.debug("peak sampler: ended-check failed", exc_info=True)
            return None


def _safe_read(reader: VramReader | None) -> int | None:
    if reader is None:
        return None
    try:
        return reader()
    except Exception:  # a failed sample is a missing sample (GPU lost mid-scene: NVML re-inits next time)
        logger.debug("peak sampler: read failed", exc_info=True)
        return None


# --- readers --------------------------------------------------------------------------------------------


def process_rss_bytes() -> int | None:
    """Resident memory of this process now: /proc/self/statm, else psutil when installed, else None."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil  # macOS/Windows; imported only where /proc is missing
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def vram_reader(hint: DeviceHint | None) -> tuple[str, VramReader | None, str | None]:
    """(source, reader, note) for device-wide used VRAM of ComfyUI's device.

    NVML first (a memory query costs microseconds), then torch's ``mem_get_info``
    on CUDA/ROCm/XPU; a CPU device (or none answering) samples RSS only.
    """
    if hint is not None and hint.type in ("cpu", "mps"):
        return "none", None, None
    notes: list[str] = []
    for name, probe in (("nvml", probe_nvml), ("torch", probe_torch)):
        if name == "nvml" and hint is not None and hint.type not in ("cuda",):
            continue
        first = _attempt(probe, hint)
        if isinstance(first, Reading) and first.basis == "device" and first.device["VramUsedMB"] is not None:
            return name, _reader_from(probe, hint), None
        notes.append(f"{name}: {first if isinstance(first, str) else 'no device-wide figure'}")
    return "none", None, "; ".join(notes) if hint is not None else None


def _attempt(probe: Callable[[DeviceHint | None], Reading | str], hint: DeviceHint | None) -> Reading | str:
    try:
        return probe(hint)
    except Exception as exc:  # bindings raise anything; the sampler then reads RSS only
        return f"{type(exc).__name__}: {exc}"


def _reader_from(probe: Callable[[DeviceHint | None], Reading | str], hint: DeviceHint | None) -> VramReader:
    def read() -> int | None:
        reading = probe(hint)
        if not isinstance(reading, Reading):
            return None
        device = reading.device
        if device["VramTotalMB"] is None or device["VramFreeMB"] is None:
            return None
        used_mb: int = device["VramUsedMB"]
        return used_mb * 1048576

    return read


# --- the process-wide sampler ---------------------------------------------------------------------------

_lock = threading.Lock()
_active: PeakSampler | None = None


def max_duration_s() -> float:
    """The sampler's lifetime limit: $SCENE_TELEMETRY_PEAK_MAX_SECONDS or 6 h."""
    try:
        value = float(os.environ.get(MAX_DURATION_ENV, DEFAULT_MAX_DURATION_S))
    except ValueError:
        return DEFAULT_MAX_DURATION_S
    return value if value > 0 else DEFAULT_MAX_DURATION_S


def start_peak_sampling(
    prompt_id: str | None,
    *,
    hint: DeviceHint | None = None,
    ended: EndedCheck | None = None,
    interval_s: float | None = None,
    max_seconds: float | None = None,
    check_every_s: float | None = None,
) -> list[str]:
    """Start sampling for *prompt_id* (the 'before' snapshot); stops any earlier sampler. Returns notes.

    *hint* is ComfyUI's device (the node reads it through ``nodes/_comfy.py``; None: this process's
    initialised CUDA device, if any). *ended* is asked every *check_every_s* whether the prompt still runs
    (see the module docstring);
    unset numbers take the module defaults at call time.
    """
    notes: list[str] = []
    stale = _take_active()
    if stale is not None:
        result = stale.stop("superseded by a later 'before' snapshot")
        logger.info("peak sampler of prompt %s stopped: a new 'before' snapshot started", result.prompt_id)
    if hint is None:
        hint = loaded_torch_hint()
    source, reader, note = vram_reader(hint)
    if note:
        notes.append(f"peak: VRAM not sampled ({note})")
    sampler = PeakSampler(
        prompt_id=prompt_id,
        read_vram=reader,
        read_rss=process_rss_bytes,
        source=source,
        interval_s=interval_s if interval_s is not None else DEFAULT_INTERVAL_S,
        max_duration_s=max_seconds if max_seconds is not None else max_duration_s(),
        ended=ended,
        check_every_s=check_every_s if check_every_s is not None else DEFAULT_CHECK_EVERY_S,
    )
    sampler.start()
    global _active
    with _lock:
        _active = sampler
    return notes


def finish_peak_sampling(prompt_id: str | None) -> dict[str, Any] | None:
    """Stop the sampler ('after' snapshot) and return the snapshot's ``Peak`` block (nulls + note if unusable).

    None when no sampler exists (no 'before' snapshot ran in this process): nothing was expected, no note.
    """
    sampler = _take_active()
    if sampler is None:
        return None
    result = sampler.stop()
    if result.ended is not None:  # says which prompt and how it ended: more useful than "another prompt"
        return peak_block(None, f"peak: sampler ended before the 'after' snapshot ({result.ended})")
    if result.prompt_id != prompt_id:
        return peak_block(None, f"peak: the sampler belonged to prompt {result.prompt_id}, not this one")
    return peak_block(result, None)


def stop_stale_sampling(prompt_id: str | None = None) -> PeakResult | None:
    """Stop a sampler that does not belong to *prompt_id* (None: stop any). Returns what it saw."""
    global _active
    with _lock:
        sampler = _active
        if sampler is None or (prompt_id is not None and sampler.prompt_id == prompt_id):
            return None
        _active = None
    return sampler.stop("stopped as stale (a later prompt or shutdown)")


def active_sampler() -> PeakSampler | None:
    """The running sampler, if any (tests and the metrics route)."""
    with _lock:
        return _active


def _take_active() -> PeakSampler | None:
    global _active
    with _lock:
        sampler, _active = _active, None
    return sampler


def peak_block(result: PeakResult | None, note: str | None) -> dict[str, Any]:
    """The snapshot's ``Peak`` object: MiB peaks, sample count, interval, source and note."""
    if result is None:
        return {"VramPeakMB": None, "RssPeakMB": None, "Samples": None, "IntervalS": None, "Source": None, "Note": note}
    return {
        "VramPeakMB": mib(result.vram_peak_bytes),
        "RssPeakMB": mib(result.rss_peak_bytes),
        "Samples": result.samples,
        "IntervalS": result.interval_s,
        "Source": result.source,
        "Note": note,
    }
