"""Stand-ins for the GPU libraries, for tests that are not about the hardware itself.

- :class:`FakeNvml` builds a ``pynvml`` module with the real binding's exception
  classes (``NVMLError_LibraryNotFound`` … from nvidia-ml-py) and the values real
  cards report (total bytes, bytes names from older bindings, driver strings).
- :func:`fake_torch` builds the slice of ``torch`` the probes read on a CUDA,
  ROCm or MPS device.
- :func:`fake_comfy` builds ``comfy`` + ``comfy.model_management`` with
  ``get_torch_device()``.

Install them with ``monkeypatch.setitem(sys.modules, ...)`` so they vanish after
the test.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

import pynvml as real_pynvml

MIB = 1048576

# Totals as NVML reports them on real cards (bytes).
RTX_4090_TOTAL = 25757220864  # 24564 MiB
A100_80GB_TOTAL = 85899345920  # 81920 MiB
H100_80GB_TOTAL = 85520809984  # 81559 MiB


@dataclass
class FakeGpu:
    """One NVML device: name/uuid may be bytes (older bindings) and free can change between reads."""

    name: str | bytes
    uuid: str | bytes
    total: int
    free: int
    uuid_error: type[Exception] | None = None
    memory_error: type[Exception] | None = None


@dataclass
class FakeNvml:
    """A ``pynvml`` module whose behaviour a test scripts; counts init/shutdown calls."""

    gpus: list[FakeGpu] = field(default_factory=list)
    driver: str | bytes = b"550.54.14"
    init_error: type[Exception] | None = None
    init_calls: int = 0
    shutdown_calls: int = 0
    memory_reads: int = 0

    def module(self) -> types.ModuleType:
        mod = types.ModuleType("pynvml")
        for name in dir(real_pynvml):
            if name.startswith("NVMLError"):
                setattr(mod, name, getattr(real_pynvml, name))
        mod.nvmlInit = self._init  # type: ignore[attr-defined]
        mod.nvmlShutdown = self._shutdown  # type: ignore[attr-defined]
        mod.nvmlDeviceGetCount = lambda: len(self.gpus)  # type: ignore[attr-defined]
        mod.nvmlDeviceGetHandleByIndex = self._handle  # type: ignore[attr-defined]
        mod.nvmlDeviceGetName = lambda h: self.gpus[h].name  # type: ignore[attr-defined]
        mod.nvmlDeviceGetUUID = self._uuid  # type: ignore[attr-defined]
        mod.nvmlDeviceGetMemoryInfo = self._memory  # type: ignore[attr-defined]
        mod.nvmlSystemGetDriverVersion = lambda: self.driver  # type: ignore[attr-defined]
        return mod

    def _init(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise self.init_error()

    def _shutdown(self) -> None:
        self.shutdown_calls += 1

    def _handle(self, index: int) -> int:
        if not 0 <= index < len(self.gpus):
            raise real_pynvml.NVMLError_InvalidArgument()
        return index

    def _uuid(self, handle: int) -> str | bytes:
        gpu = self.gpus[handle]
        if gpu.uuid_error is not None:
            raise gpu.uuid_error()
        return gpu.uuid

    def _memory(self, handle: int) -> types.SimpleNamespace:
        gpu = self.gpus[handle]
        if gpu.memory_error is not None:
            raise gpu.memory_error()
        self.memory_reads += 1
        return types.SimpleNamespace(total=gpu.total, free=gpu.free, used=gpu.total - gpu.free)


def rtx_4090(free: int = 22000 * MIB) -> FakeGpu:
    return FakeGpu(b"NVIDIA GeForce RTX 4090", b"GPU-5c6a8a49-8c5e-2f4b-0f4a-1f8e2f3d9b71", RTX_4090_TOTAL, free)


def a100(uuid: str, free: int) -> FakeGpu:
    return FakeGpu("NVIDIA A100-SXM4-80GB", uuid, A100_80GB_TOTAL, free)


@dataclass
class TorchCalls:
    """What the probes asked the fake torch for."""

    peak_resets: list[Any] = field(default_factory=list)
    mem_get_info: list[Any] = field(default_factory=list)


def fake_torch(
    *,
    hip: str | None = None,
    initialised: bool = True,
    free: int = 20000 * MIB,
    total: int = RTX_4090_TOTAL,
    uuids: tuple[str, ...] = ("5c6a8a49-8c5e-2f4b-0f4a-1f8e2f3d9b71",),
    allocated: int = 3 * 1024 * MIB,
    reserved: int = 4 * 1024 * MIB,
    peak_allocated: int = 9 * 1024 * MIB,
    peak_reserved: int = 10 * 1024 * MIB,
) -> tuple[types.ModuleType, TorchCalls]:
    """A ``torch`` with a ``cuda`` namespace (a ROCm build when *hip* is set)."""
    calls = TorchCalls()
    torch = types.ModuleType("torch")
    torch.version = types.SimpleNamespace(hip=hip, cuda=None if hip else "12.8")  # type: ignore[attr-defined]

    def properties(index: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(name="NVIDIA GeForce RTX 4090", total_memory=total, uuid=uuids[index])

    def mem_get_info(index: Any = None) -> tuple[int, int]:
        calls.mem_get_info.append(index)
        return free, total

    torch.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        is_initialized=lambda: initialised,
        current_device=lambda: 0,
        device_count=lambda: len(uuids),
        get_device_properties=properties,
        get_device_name=lambda index=None: "NVIDIA GeForce RTX 4090",
        mem_get_info=mem_get_info,
        memory_allocated=lambda index=None: allocated,
        memory_reserved=lambda index=None: reserved,
        max_memory_allocated=lambda index=None: peak_allocated,
        max_memory_reserved=lambda index=None: peak_reserved,
        reset_peak_memory_stats=calls.peak_resets.append,
    )
    torch.mps = types.SimpleNamespace(  # type: ignore[attr-defined]
        recommended_max_memory=lambda: 21845 * MIB,
        driver_allocated_memory=lambda: 6000 * MIB,
        current_allocated_memory=lambda: 5000 * MIB,
    )
    return torch, calls


def fake_comfy(device_type: str, index: int | None) -> tuple[types.ModuleType, types.ModuleType]:
    """``comfy`` and ``comfy.model_management`` whose ``get_torch_device()`` is ``device_type:index``."""
    comfy = types.ModuleType("comfy")
    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = lambda: types.SimpleNamespace(type=device_type, index=index)  # type: ignore[attr-defined]
    comfy.model_management = mm  # type: ignore[attr-defined]
    return comfy, mm
