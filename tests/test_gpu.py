"""The node-side probe chain, snapshot shape and contract fields (telemetry/_gpu.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynvml as real_pynvml
import pytest
from gpu_fakes import (
    A100_80GB_TOTAL,
    MIB,
    RTX_4090_TOTAL,
    FakeGpu,
    FakeNvml,
    a100,
    fake_comfy,
    fake_torch,
    rtx_4090,
)
from jsonschema import Draft202012Validator
from scene_telemetry.nodes import _comfy
from scene_telemetry.telemetry import (
    DeviceHint,
    _gpu,
    _host_ram,
    gpu_contract_fields,
    load_schema,
    mib,
    ram_sample,
    reset_torch_peaks,
    select_device,
)

SNAPSHOT_KEYS = {
    "Label",
    "TakenAt",
    "MonotonicS",
    "Source",
    "VramBasis",
    "Device",
    "Torch",
    "Devices",
    "Ram",
    "FallbackNotes",
}
DEVICE_KEYS = {"Name", "Type", "Index", "Uuid", "DriverVersion", "VramTotalMB", "VramUsedMB", "VramFreeMB"}


def take_snapshot(label: str) -> dict[str, Any]:
    """A snapshot as the node takes it: ComfyUI's device hint comes in through nodes/_comfy.py."""
    hint, note = _comfy.device_hint()
    return _gpu.take_snapshot(label, hint, note)


@pytest.fixture(autouse=True)
def fresh_probes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts without a cached NVML session, comfy, torch hint or CUDA_VISIBLE_DEVICES."""
    _gpu.reset_probe_state()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setitem(sys.modules, "comfy", None)  # None in sys.modules makes `import comfy` fail
    monkeypatch.setitem(sys.modules, "comfy.model_management", None)
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    yield
    _gpu.reset_probe_state()


def install_nvml(monkeypatch: pytest.MonkeyPatch, nvml: FakeNvml) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", nvml.module())


def install_comfy(monkeypatch: pytest.MonkeyPatch, device_type: str, index: int | None) -> None:
    comfy, mm = fake_comfy(device_type, index)
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)


def install_torch(monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> Any:
    torch, calls = fake_torch(**kwargs)
    monkeypatch.setitem(sys.modules, "torch", torch)
    return calls


def gpu_defs_validator(name: str) -> Draft202012Validator:
    common = load_schema("common")
    return Draft202012Validator({"$defs": common["$defs"], "$ref": f"#/$defs/{name}"})


def assert_contract_valid(gpu: dict[str, Any], system: dict[str, Any]) -> None:
    for name, obj in (("GPU", gpu), ("System", system)):
        errors = [e.message for e in gpu_defs_validator(name).iter_errors(obj)]
        assert errors == [], f"{name}: {errors}"


# --- units ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_bytes", "expected"),
    [
        (0, 0),
        (524287, 0),  # just under half a MiB rounds down
        (524288, 0),  # exactly half: round-half-even → 0
        (524289, 1),
        (1048575, 1),
        (1572864, 2),  # 1.5 MiB: half-even → 2
        (2621440, 2),  # 2.5 MiB: half-even → 2
        (RTX_4090_TOTAL, 24564),
        (A100_80GB_TOTAL, 81920),
        (None, None),
    ],
)
def test_mib_rounds_to_nearest_whole_mib(n_bytes: int | None, expected: int | None) -> None:
    assert mib(n_bytes) == expected


# --- the CPU path, for real ---------------------------------------------------------------------------


def test_cpu_only_machine_gives_cpu_record_with_real_ram_and_reasons() -> None:
    snap = take_snapshot("before")
    assert set(snap) == SNAPSHOT_KEYS and set(snap["Device"]) == DEVICE_KEYS
    assert (snap["Source"], snap["VramBasis"], snap["Device"]["Type"]) == ("cpu", "none", "cpu")
    assert snap["Device"]["VramUsedMB"] is None and snap["Devices"] == [] and snap["Torch"] is None
    # This machine has no NVIDIA driver: the real nvidia-ml-py says so, and the chain writes it down.
    assert snap["FallbackNotes"][0] == "nvml: NVML Shared Library Not Found"
    assert [n.split(":")[0] for n in snap["FallbackNotes"]] == ["nvml", "amdsmi", "torch"]
    meminfo = Path("/proc/meminfo").read_text()
    total_kib = int(next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemTotal:")))
    assert snap["Ram"]["RamTotalMB"] == round(total_kib / 1024)
    assert snap["Ram"]["RamUsedMB"] == snap["Ram"]["RamTotalMB"] - snap["Ram"]["RamFreeMB"]
    json.dumps(snap)  # the GPU_SNAPSHOT value travels between nodes and into JSON


def test_missing_library_is_remembered_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml(init_error=real_pynvml.NVMLError_LibraryNotFound)
    install_nvml(monkeypatch, nvml)
    first, second = take_snapshot("before"), take_snapshot("after")
    assert nvml.init_calls == 1
    assert first["FallbackNotes"][0] == second["FallbackNotes"][0] == "nvml: NVML Shared Library Not Found"


def test_driver_not_loaded_is_noted(monkeypatch: pytest.MonkeyPatch) -> None:
    install_nvml(monkeypatch, FakeNvml(init_error=real_pynvml.NVMLError_DriverNotLoaded))
    assert take_snapshot("x")["FallbackNotes"][0] == "nvml: Driver Not Loaded"


def test_nvml_not_installed_is_noted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    note = take_snapshot("x")["FallbackNotes"][0]
    assert note.startswith("nvml: nvidia-ml-py is not installed")


# --- NVML -------------------------------------------------------------------------------------------


def test_nvml_single_gpu_with_bytes_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    install_nvml(monkeypatch, FakeNvml([rtx_4090(free=22000 * MIB)]))
    snap = take_snapshot("before")
    assert (snap["Source"], snap["VramBasis"], snap["FallbackNotes"]) == ("nvml", "device", [])
    assert snap["Device"] == {
        "Name": "NVIDIA GeForce RTX 4090",
        "Type": "cuda",
        "Index": 0,
        "Uuid": "GPU-5c6a8a49-8c5e-2f4b-0f4a-1f8e2f3d9b71",
        "DriverVersion": "550.54.14",
        "VramTotalMB": 24564,
        "VramUsedMB": 24564 - 22000,
        "VramFreeMB": 22000,
    }
    assert snap["Devices"] == [
        {
            "Index": 0,
            "Name": "NVIDIA GeForce RTX 4090",
            "Uuid": "GPU-5c6a8a49-8c5e-2f4b-0f4a-1f8e2f3d9b71",
            "VramTotal": 24564,
        }
    ]


def test_nvml_initialises_once_and_rereads_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = rtx_4090(free=22000 * MIB)
    nvml = FakeNvml([gpu])
    install_nvml(monkeypatch, nvml)
    before = take_snapshot("before")
    gpu.free = 12000 * MIB
    after = take_snapshot("after")
    assert nvml.init_calls == 1
    assert (before["Device"]["VramFreeMB"], after["Device"]["VramFreeMB"]) == (22000, 12000)


def test_gpu_lost_mid_run_falls_back_then_reinitialises(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = rtx_4090()
    nvml = FakeNvml([gpu])
    install_nvml(monkeypatch, nvml)
    assert take_snapshot("before")["Source"] == "nvml"
    gpu.memory_error = real_pynvml.NVMLError_GpuIsLost
    lost = take_snapshot("after")
    assert lost["Source"] == "cpu"
    assert lost["FallbackNotes"][0] == "nvml: GPU is lost"
    assert nvml.shutdown_calls == 1
    gpu.memory_error = None  # the card came back (driver reset)
    assert take_snapshot("later")["Source"] == "nvml"
    assert nvml.init_calls == 2


def test_uuid_not_supported_keeps_the_nvml_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = rtx_4090()
    gpu.uuid_error = real_pynvml.NVMLError_NotSupported  # seen on WSL/vGPU
    install_nvml(monkeypatch, FakeNvml([gpu]))
    snap = take_snapshot("x")
    assert snap["Source"] == "nvml" and snap["Device"]["Uuid"] is None


def test_memory_not_supported_fails_the_tier(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = rtx_4090()
    gpu.memory_error = real_pynvml.NVMLError_NotSupported
    install_nvml(monkeypatch, FakeNvml([gpu]))
    snap = take_snapshot("x")
    assert snap["Source"] == "cpu" and snap["FallbackNotes"][0] == "nvml: Not Supported"


def test_foreign_exception_from_binding_becomes_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml([rtx_4090()])
    module = nvml.module()

    def broken() -> int:
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    module.nvmlDeviceGetCount = broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", module)
    snap = take_snapshot("x")
    assert snap["FallbackNotes"][0] == "nvml: OSError: libnvidia-ml.so.1: cannot open shared object file"


def test_no_devices_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    install_nvml(monkeypatch, FakeNvml([]))
    assert take_snapshot("x")["FallbackNotes"][0] == "nvml: no NVIDIA device"


# --- which device -----------------------------------------------------------------------------------

UUID_A = "GPU-11111111-2222-3333-4444-555555555555"
UUID_B = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def two_a100s() -> FakeNvml:
    return FakeNvml([a100(UUID_A, 80000 * MIB), a100(UUID_B, 50000 * MIB)])


def test_comfy_device_selected_by_torch_uuid(monkeypatch: pytest.MonkeyPatch) -> None:
    install_nvml(monkeypatch, two_a100s())
    install_comfy(monkeypatch, "cuda", 0)
    # torch's cuda:0 is NVML's device 1 (CUDA ordering differs from NVML's PCI order).
    install_torch(monkeypatch, uuids=(UUID_B.removeprefix("GPU-"), UUID_A.removeprefix("GPU-")))
    snap = take_snapshot("x")
    assert snap["Device"]["Uuid"] == UUID_B and snap["Device"]["Index"] == 1
    assert snap["Device"]["VramFreeMB"] == 50000
    assert [d["Uuid"] for d in snap["Devices"]] == [UUID_A, UUID_B]
    assert snap["Torch"] == {"AllocatedMB": 3072, "ReservedMB": 4096, "PeakAllocatedMB": 9216, "PeakReservedMB": 10240}


def test_cuda_visible_devices_maps_index_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    install_nvml(monkeypatch, two_a100s())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # what ComfyUI's --cuda-device 1 sets
    assert take_snapshot("x")["Device"]["Uuid"] == UUID_B


@pytest.mark.parametrize(
    ("visible", "hint", "expected"),
    [
        (None, None, 0),
        (None, DeviceHint("cuda", 1), 1),
        (None, DeviceHint("cuda", 5), None),  # not there: honest failure, not device 0
        ("1,0", DeviceHint("cuda", 0), 1),
        ("GPU-aaaa", None, 1),  # CUDA accepts unique UUID prefixes
        ("GPU-", None, None),  # ambiguous prefix
        ("MIG-1234", None, 0),  # MIG instance: fall back to the index
        (None, DeviceHint("cuda", 0, UUID_B.lower()), 1),
    ],
)
def test_select_device(
    monkeypatch: pytest.MonkeyPatch, visible: str | None, hint: DeviceHint | None, expected: int | None
) -> None:
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    devices = [{"Index": 0, "Uuid": UUID_A}, {"Index": 1, "Uuid": UUID_B}]
    assert select_device(devices, hint) == expected


# --- torch and amdsmi tiers, ComfyUI's device ------------------------------------------------------------


def test_torch_tier_answers_when_nvml_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    install_nvml(monkeypatch, FakeNvml(init_error=real_pynvml.NVMLError_LibraryNotFound))
    install_comfy(monkeypatch, "cuda", 0)
    calls = install_torch(monkeypatch, free=20000 * MIB)
    snap = take_snapshot("x")
    assert (snap["Source"], snap["VramBasis"]) == ("torch", "device")
    assert snap["FallbackNotes"] == ["nvml: NVML Shared Library Not Found"]  # amdsmi not asked on CUDA
    assert snap["Device"]["VramUsedMB"] == 24564 - 20000 and snap["Device"]["Uuid"].startswith("GPU-5c6a")
    assert snap["Torch"]["PeakReservedMB"] == 10240 and calls.mem_get_info == [0]


def test_comfy_on_cpu_records_cpu_without_notes(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml([rtx_4090()])
    install_nvml(monkeypatch, nvml)
    install_comfy(monkeypatch, "cpu", None)
    snap = take_snapshot("x")
    assert (snap["Source"], snap["FallbackNotes"], nvml.init_calls) == ("cpu", [], 0)


def test_mps_is_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    install_comfy(monkeypatch, "mps", None)
    install_torch(monkeypatch)
    snap = take_snapshot("x")
    assert (snap["Source"], snap["VramBasis"], snap["Device"]["Type"]) == ("torch", "process", "mps")
    assert (snap["Device"]["VramUsedMB"], snap["Device"]["VramTotalMB"]) == (6000, 21845)
    assert snap["Torch"]["AllocatedMB"] == 5000 and snap["Torch"]["PeakAllocatedMB"] is None


def test_rocm_goes_to_amdsmi_not_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml([rtx_4090()])
    install_nvml(monkeypatch, nvml)
    install_comfy(monkeypatch, "cuda", 0)
    install_torch(monkeypatch, hip="6.2.41133")
    amdsmi = _fake_amdsmi()
    monkeypatch.setitem(sys.modules, "amdsmi", amdsmi)
    snap = take_snapshot("x")
    assert nvml.init_calls == 0
    assert (snap["Source"], snap["Device"]["Type"], snap["Device"]["Name"]) == ("amdsmi", "rocm", "AMD Instinct MI300X")
    assert (snap["Device"]["VramTotalMB"], snap["Device"]["VramUsedMB"], snap["Device"]["VramFreeMB"]) == (
        196592,
        1024,
        195568,
    )
    assert amdsmi.shutdowns == [True]


def _fake_amdsmi() -> Any:
    import types

    mod: Any = types.ModuleType("amdsmi")
    mod.shutdowns = []
    mod.amdsmi_init = lambda: None
    mod.amdsmi_shut_down = lambda: mod.shutdowns.append(True)
    mod.amdsmi_get_processor_handles = lambda: ["h0"]
    mod.amdsmi_get_gpu_asic_info = lambda h: {"market_name": "AMD Instinct MI300X"}
    mod.amdsmi_get_gpu_device_uuid = lambda h: "c7ff74a1-0000-1000-80f3-9c5e1c1b2d3e"
    mod.amdsmi_get_gpu_vram_usage = lambda h: {"vram_total": 196592, "vram_used": 1024}
    mod.amdsmi_get_gpu_driver_info = lambda h: {"driver_name": "amdgpu", "driver_version": "6.8.5"}
    return mod


def test_reset_torch_peaks_on_comfy_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    install_comfy(monkeypatch, "cuda", 0)
    calls = install_torch(monkeypatch)
    assert reset_torch_peaks(_comfy.device_hint()[0]) is None and calls.peak_resets == [0]


def test_reset_torch_peaks_outside_comfy_is_a_no_op() -> None:
    assert _comfy.device_hint() == (None, None) and reset_torch_peaks(None) is None


def test_uninitialised_cuda_is_never_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = install_torch(monkeypatch, initialised=False)  # a script that imported torch but has no context
    snap = take_snapshot("x")
    assert snap["Source"] == "cpu" and calls.mem_get_info == [] and snap["Torch"] is None


# --- host RAM ---------------------------------------------------------------------------------------


def test_ram_from_meminfo_uses_mem_available(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24684032 kB\nMemFree:         1000000 kB\nMemAvailable:   19769980 kB\n")
    monkeypatch.setattr(_host_ram, "MEMINFO_PATH", str(meminfo))
    # 24684032 KiB = 24105.5 MiB → 24106 (half-even: 24106 is even); 19769980 KiB = 19306.6 MiB → 19307
    assert ram_sample() == {"RamTotalMB": 24106, "RamFreeMB": 19307, "RamUsedMB": 24106 - 19307}


def test_ram_falls_back_to_sysconf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_host_ram, "MEMINFO_PATH", str(tmp_path / "missing"))
    sample = ram_sample()
    assert sample is not None and sample["RamTotalMB"] > 0
    assert sample["RamUsedMB"] == sample["RamTotalMB"] - sample["RamFreeMB"]


# --- contract fields ------------------------------------------------------------------------------------


def nvml_pair(monkeypatch: pytest.MonkeyPatch, free_before: int, free_after: int) -> tuple[dict, dict]:
    gpu = FakeGpu("NVIDIA GeForce RTX 4090", "GPU-5c6a", RTX_4090_TOTAL, free_before)
    install_nvml(monkeypatch, FakeNvml([gpu]))
    before = take_snapshot("before")
    gpu.free = free_after
    return before, take_snapshot("after")


def test_contract_fields_from_nvml_snapshots_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    before, after = nvml_pair(monkeypatch, 22000 * MIB, 9000 * MIB)
    gpu, system = gpu_contract_fields(before, after)
    assert_contract_valid(gpu, system)
    assert (gpu["VramBeforeMB"], gpu["VramAfterMB"], gpu["VramDeltaMB"]) == (2564, 15564, 13000)
    assert (gpu["VramFreeBefore"], gpu["VramFreeAfter"], gpu["VramTotal"]) == (22000, 9000, 24564)
    assert (gpu["Source"], gpu["VramBasis"], gpu["Uuid"]) == ("nvml", "device", "GPU-5c6a")
    assert system["Before"] == before["Ram"] and system["After"] == after["Ram"]


def test_delta_is_exact_difference_of_rounded_values(monkeypatch: pytest.MonkeyPatch) -> None:
    # used before = 2564 MiB + 524287 B (rounds down), after = 2564 MiB + 524289 B (rounds up):
    # 2 bytes apart, yet the contract's delta is after − before of the rounded values, exactly 1.
    before, after = nvml_pair(monkeypatch, 22000 * MIB - 524287, 22000 * MIB - 524289)
    gpu, _ = gpu_contract_fields(before, after)
    assert (gpu["VramBeforeMB"], gpu["VramAfterMB"], gpu["VramDeltaMB"]) == (2564, 2565, 1)


def test_delta_can_be_negative(monkeypatch: pytest.MonkeyPatch) -> None:
    before, after = nvml_pair(monkeypatch, 9000 * MIB, 22000 * MIB)
    gpu, system = gpu_contract_fields(before, after)
    assert gpu["VramDeltaMB"] == -13000
    assert_contract_valid(gpu, system)


def test_cpu_snapshots_give_null_vram_and_union_of_notes() -> None:
    before, after = take_snapshot("before"), take_snapshot("after")
    after["FallbackNotes"].append("nvml: something new")
    gpu, system = gpu_contract_fields(before, after)
    assert_contract_valid(gpu, system)
    assert gpu["VramBeforeMB"] is None and gpu["VramDeltaMB"] is None and gpu["Type"] == "cpu"
    assert system["FallbackNotes"] == before["FallbackNotes"] + ["nvml: something new"]


@pytest.mark.parametrize("which", ["before", "after", "neither"])
def test_missing_snapshots_validate(which: str) -> None:
    snap = take_snapshot(which)
    before = snap if which == "before" else None
    after = snap if which == "after" else None
    gpu, system = gpu_contract_fields(before, after)
    assert_contract_valid(gpu, system)
    assert system["Before"] == (snap["Ram"] if before else None)
    assert system["After"] == (snap["Ram"] if after else None)
    if which == "neither":
        assert gpu["Source"] == "none" and system["FallbackNotes"] == ["gpu: no snapshot was wired"]


def test_device_change_between_snapshots_drops_before(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = two_a100s()
    install_nvml(monkeypatch, nvml)
    before = take_snapshot("before")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    after = take_snapshot("after")
    gpu, system = gpu_contract_fields(before, after)
    assert_contract_valid(gpu, system)
    assert gpu["Uuid"] == UUID_B and gpu["VramBeforeMB"] is None and gpu["VramDeltaMB"] is None
    assert system["FallbackNotes"] == [
        f"gpu: before measured {UUID_A}, after {UUID_B}; VramBeforeMB/VramFreeBefore dropped"
    ]


def test_basis_change_between_snapshots_drops_before(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu_dev = rtx_4090()
    install_nvml(monkeypatch, FakeNvml([gpu_dev]))
    install_comfy(monkeypatch, "mps", None)
    install_torch(monkeypatch)
    after = take_snapshot("after")  # torch on MPS: per-process basis
    monkeypatch.setitem(sys.modules, "comfy", None)
    monkeypatch.setitem(sys.modules, "comfy.model_management", None)
    before = take_snapshot("before")  # NVML: device basis
    gpu, system = gpu_contract_fields(before, after)
    assert_contract_valid(gpu, system)
    assert gpu["VramBasis"] == "process" and gpu["VramBeforeMB"] is None and gpu["VramAfterMB"] == 6000
    assert system["FallbackNotes"][-1].startswith("gpu: VramBasis changed from device (nvml) to process")


# --- hygiene ------------------------------------------------------------------------------------------


def test_import_loads_no_gpu_library() -> None:
    code = (
        "import sys, scene_telemetry, scene_telemetry.telemetry._gpu;"
        "print(sorted(m for m in ('pynvml', 'torch', 'amdsmi', 'comfy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
