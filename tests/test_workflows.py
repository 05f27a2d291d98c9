"""The shipped example workflows load and validate against ComfyUI 0.8.0 and this pack's nodes.

Core node definitions come from the recorded ``/object_info`` of a stock 0.8.0 server; the pack's
entries are built from the real node classes, the way the server builds them. Model file names
(``*.safetensors``) are the only values not checked: the recording lists no model files.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from scene_telemetry import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from scene_telemetry.runner.workflow_format import (
    is_model_file,
    object_info_for,
    prompt_problems,
    ui_to_api,
    widget_slots,
    workflow_problems,
)
from scene_telemetry.telemetry import InvalidInputError

REPO_ROOT = Path(__file__).resolve().parents[1]
UI_DIR = REPO_ROOT / "example_workflows"
API_DIR = REPO_ROOT / "api_workflows"
UI_FILES = sorted(UI_DIR.glob("*.json"))
PACK_NODES = (
    "SceneTelemetry_WriteDoneMarker",
    "SceneTelemetry_GPUSnapshot",
    "SceneTelemetry_Collector",
    "SceneTelemetry_RunSummaryValidator",
)
# Folders ComfyUI scans for templates (GET /workflow_templates); API prompts must not be in one.
TEMPLATE_DIRS = ("example_workflows", "example", "examples", "workflow", "workflows")
UI_NODE_KEYS = {"id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties"}


@pytest.fixture(scope="module")
def object_info() -> dict[str, Any]:
    core = json.loads((REPO_ROOT / "tests/data/comfyui-0.8.0/object_info.json").read_text())
    pack = object_info_for(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)
    assert not set(core) & set(pack), "a pack node id collides with a core node (the core one would win)"
    return {**core, **pack}


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def by_id(workflow: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {node["id"]: node for node in workflow["nodes"]}


def source_of(workflow: dict[str, Any], node: dict[str, Any], input_name: str) -> tuple[dict[str, Any], int]:
    """The node and output slot feeding *input_name* of *node*."""
    link_id = next(s["link"] for s in node["inputs"] if s["name"] == input_name)
    assert link_id is not None, f"{node['type']}.{input_name} is not connected"
    link = next(link for link in workflow["links"] if link[0] == link_id)
    return by_id(workflow)[link[1]], link[2]


def of_type(workflow: dict[str, Any], node_type: str) -> list[dict[str, Any]]:
    return [node for node in workflow["nodes"] if node["type"] == node_type]


def test_both_examples_and_their_api_twins_ship() -> None:
    names = {p.name for p in UI_FILES}
    assert {"scene_telemetry_model_free.json", "scene_telemetry_wan_t2v.json"} <= names
    assert names == {p.name for p in API_DIR.glob("*.json")}, "every UI workflow needs an API twin and vice versa"
    assert API_DIR.name not in TEMPLATE_DIRS


def test_pack_nodes_are_registered() -> None:
    missing = [name for name in PACK_NODES if name not in NODE_CLASS_MAPPINGS]
    assert not missing, f"example workflows use pack nodes not in NODE_CLASS_MAPPINGS: {missing}"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_has_editor_layout(path: Path) -> None:
    workflow = load(path)
    assert workflow["version"] == 0.4
    assert {"last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra"} <= set(workflow)
    for node in workflow["nodes"]:
        assert UI_NODE_KEYS <= set(node), f"node {node['id']} lacks {UI_NODE_KEYS - set(node)}"
    orders = {node["id"]: node["order"] for node in workflow["nodes"]}
    assert sorted(orders.values()) == list(range(len(orders)))
    for _link_id, src, _slot, dst, _dst_slot, _type in workflow["links"]:
        assert orders[src] < orders[dst], "'order' must be a topological order of the links"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_matches_node_definitions(path: Path, object_info: dict[str, Any]) -> None:
    assert workflow_problems(load(path), object_info) == []


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_api_twin_validates(path: Path, object_info: dict[str, Any]) -> None:
    assert prompt_problems(load(API_DIR / path.name), object_info, check_model_files=False) == []


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_api_twin_describes_the_same_graph(path: Path, object_info: dict[str, Any]) -> None:
    assert ui_to_api(load(path), object_info) == load(API_DIR / path.name)


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_only_model_files_skip_combo_checks(path: Path, object_info: dict[str, Any]) -> None:
    """With model checks on, the only complaints are model files the recording cannot list."""
    problems = prompt_problems(load(API_DIR / path.name), object_info)
    assert all(".safetensors" in line for line in problems), problems


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_telemetry_nodes_are_wired_around_the_work(path: Path) -> None:
    workflow = load(path)
    validator = of_type(workflow, "SceneTelemetry_RunSummaryValidator")[0]
    collector, _ = source_of(workflow, validator, "telemetry")
    assert collector["type"] == "SceneTelemetry_Collector"
    marker, _ = source_of(workflow, collector, "done_marker")
    assert marker["type"] == "SceneTelemetry_WriteDoneMarker"
    for name, label in (("gpu_before", "before"), ("gpu_after", "after")):
        snapshot, slot = source_of(workflow, collector, name)
        assert (snapshot["type"], slot, snapshot["widgets_values"][0]) == ("SceneTelemetry_GPUSnapshot", 1, label)
    after, slot = source_of(workflow, marker, "images")
    assert (after["widgets_values"][0], slot) == ("after", 0), "frames must pass through the 'after' snapshot"


def test_wan_graph_snapshots_the_model_before_sampling_and_the_frames_after_decode() -> None:
    workflow = load(UI_DIR / "scene_telemetry_wan_t2v.json")
    sampler = of_type(workflow, "KSampler")[0]
    shift, _ = source_of(workflow, sampler, "model")
    before, _ = source_of(workflow, shift, "model")
    assert (shift["type"], before["widgets_values"][0]) == ("ModelSamplingSD3", "before")
    assert source_of(workflow, before, "value")[0]["type"] == "UNETLoader"
    after = next(n for n in of_type(workflow, "SceneTelemetry_GPUSnapshot") if n["widgets_values"][0] == "after")
    assert source_of(workflow, after, "value")[0]["type"] == "VAEDecode"
    clip = of_type(workflow, "CLIPLoader")[0]
    assert clip["widgets_values"][1] == "wan"


def test_model_free_graph_needs_no_model_files() -> None:
    prompt = load(API_DIR / "scene_telemetry_model_free.json")
    values = [v for node in prompt.values() for v in node["inputs"].values()]
    assert not [v for v in values if is_model_file(v)]
    empty = next(node for node in prompt.values() if node["class_type"] == "EmptyImage")
    assert (empty["inputs"]["width"], empty["inputs"]["height"], empty["inputs"]["batch_size"]) == (256, 144, 8)
    marker = next(node for node in prompt.values() if node["class_type"] == "SceneTelemetry_WriteDoneMarker")
    assert marker["inputs"]["filename_prefix"] == "scene-telemetry/model-free/frame"
    assert "%" not in marker["inputs"]["filename_prefix"], "frontend-only %…% tokens break headless runs"


def test_seed_widgets_carry_the_control_value(object_info: dict[str, Any]) -> None:
    """The editor stores 'control_after_generate' right after a seed; the API prompt must not."""
    slots = [slot.name for slot in widget_slots(object_info["KSampler"])]
    assert slots[:2] == ["seed", "control_after_generate"]
    workflow = load(UI_DIR / "scene_telemetry_model_free.json")
    noise = of_type(workflow, "ImageAddNoise")[0]
    assert noise["widgets_values"][1] in ("fixed", "increment", "decrement", "randomize")
    api = ui_to_api(workflow, object_info)[str(noise["id"])]
    assert set(api["inputs"]) == {"image", "seed", "strength"}


# --- the checker itself must catch what ComfyUI would reject -------------------------------------


def _api(object_info: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(ui_to_api(load(UI_DIR / "scene_telemetry_wan_t2v.json"), object_info))


def _node(prompt: dict[str, Any], class_type: str) -> dict[str, Any]:
    node: dict[str, Any] = next(n for n in prompt.values() if n["class_type"] == class_type)
    return node


@pytest.mark.parametrize(
    ("class_type", "edit", "expected"),
    [
        ("KSampler", lambda i: i.update(sampler_name="warp_drive"), "value 'warp_drive' is not one of"),
        ("KSampler", lambda i: i.update(steps=0), "value 0 is smaller than min 1"),
        ("KSampler", lambda i: i.update(denoise=1.5), "value 1.5 is bigger than max 1.0"),
        ("KSampler", lambda i: i.update(cfg="6"), "expected a FLOAT, got '6'"),
        ("KSampler", lambda i: i.pop("scheduler"), "required input 'scheduler' is missing"),
        ("KSampler", lambda i: i.update(noise_seed=1), "input 'noise_seed' does not exist"),
        ("KSampler", lambda i: i.update(model=["3", 0]), "expects MODEL but node 3 output 0 is CONDITIONING"),
        ("VAEDecode", lambda i: i.update(samples=["99", 0]), "links to node '99', which does not exist"),
        ("VAEDecode", lambda i: i.update(samples=[i["samples"][0], 3]), "which has 1"),
        ("CLIPLoader", lambda i: i.update(type="wan3"), "value 'wan3' is not one of"),
        ("SceneTelemetry_RunSummaryValidator", lambda i: i.update(fail_on_mismatch="yes"), "expected a BOOLEAN"),
        ("SceneTelemetry_Collector", lambda i: i.update(done_marker=["1", 0]), "expects DONE_MARKER but node 1"),
    ],
)
def test_prompt_checker_reports(object_info: dict[str, Any], class_type: str, edit: Any, expected: str) -> None:
    prompt = _api(object_info)
    edit(_node(prompt, class_type)["inputs"])
    problems = prompt_problems(prompt, object_info, check_model_files=False)
    assert any(expected in line for line in problems), problems


def test_prompt_checker_skips_only_model_files_when_asked(object_info: dict[str, Any]) -> None:
    prompt = _api(object_info)
    assert any("unet_name" in line for line in prompt_problems(prompt, object_info))
    _node(prompt, "UNETLoader")["inputs"]["weight_dtype"] = "fp4_imaginary"
    problems = prompt_problems(prompt, object_info, check_model_files=False)
    assert problems == [next(p for p in problems if "'fp4_imaginary'" in p)]


def test_unknown_node_type_is_reported(object_info: dict[str, Any]) -> None:
    prompt = _api(object_info)
    _node(prompt, "VAEDecode")["class_type"] = "VAEDecodeTurbo"
    assert any("node class 'VAEDecodeTurbo' is not installed" in p for p in prompt_problems(prompt, object_info))


def test_workflow_checker_reports_layout_errors(object_info: dict[str, Any]) -> None:
    workflow = load(UI_DIR / "scene_telemetry_model_free.json")
    nodes = by_id(workflow)
    noise = of_type(workflow, "ImageAddNoise")[0]
    noise["widgets_values"] = noise["widgets_values"][:1] + noise["widgets_values"][2:]  # control value dropped
    nodes[1]["outputs"][0]["type"] = "LATENT"
    workflow["links"][0][5] = "LATENT"
    marker = of_type(workflow, "SceneTelemetry_WriteDoneMarker")[0]
    marker["inputs"][0]["name"] = "frames"
    marker["properties"]["Node name for S&R"] = "WriteDoneMarker"
    workflow["last_link_id"] = 1
    problems = "\n".join(workflow_problems(workflow, object_info))
    for expected in (
        "2 widget values for widgets ['seed', 'control_after_generate', 'strength']",
        "outputs ['LATENT'] != ['IMAGE']",
        "no input named 'frames'",
        "Node name for S&R",
        "last_link_id is below",
    ):
        assert expected in problems


def test_workflow_checker_reports_broken_link_table(object_info: dict[str, Any]) -> None:
    workflow = load(UI_DIR / "scene_telemetry_model_free.json")
    collector = of_type(workflow, "SceneTelemetry_Collector")[0]
    link = next(link for link in workflow["links"] if link[3] == collector["id"])
    collector["inputs"][link[4]]["link"] = None
    assert any(f"link {link[0]}: not the link of input" in p for p in workflow_problems(workflow, object_info))


def test_conversion_rejects_what_it_cannot_represent(object_info: dict[str, Any]) -> None:
    workflow = load(UI_DIR / "scene_telemetry_model_free.json")
    of_type(workflow, "ImageAddNoise")[0]["mode"] = 4
    with pytest.raises(InvalidInputError, match="bypassed"):
        ui_to_api(workflow, object_info)
    workflow = load(UI_DIR / "scene_telemetry_model_free.json")
    of_type(workflow, "EmptyImage")[0]["widgets_values"].append(1)
    with pytest.raises(InvalidInputError, match="5 widget values, expected 4"):
        ui_to_api(workflow, object_info)


def test_conversion_drops_muted_and_note_nodes(object_info: dict[str, Any]) -> None:
    workflow = load(UI_DIR / "scene_telemetry_model_free.json")
    validator = of_type(workflow, "SceneTelemetry_RunSummaryValidator")[0]
    validator["mode"] = 2
    workflow["nodes"].append({"id": 99, "type": "Note", "mode": 0, "widgets_values": ["hello"], "inputs": []})
    prompt = ui_to_api(workflow, object_info)
    assert str(validator["id"]) not in prompt and "99" not in prompt
    assert len(prompt) == len(workflow["nodes"]) - 2


# --- the shipped model-free prompt runs through the real pack nodes ------------------------------


def _empty_image(width: int, height: int, batch_size: int, color: int) -> tuple[Any]:
    """Stand-in for core EmptyImage (not under test): a [B, H, W, 3] float batch like ComfyUI's."""
    torch = pytest.importorskip("torch")
    rgb = torch.tensor([(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF], dtype=torch.float32) / 255.0
    return (rgb.expand(batch_size, height, width, 3).clone(),)


def _image_add_noise(image: Any, seed: int, strength: float) -> tuple[Any]:
    """Stand-in for core ImageAddNoise (not under test)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return ((image + strength * torch.randn(image.shape, generator=generator)).clamp(0.0, 1.0),)


StandIn = Callable[..., tuple[Any, ...]]
CORE_STAND_INS: dict[str, StandIn] = {"EmptyImage": _empty_image, "ImageAddNoise": _image_add_noise}


def run_prompt_in_process(prompt: dict[str, Any]) -> dict[str, Any]:
    """Execute an API prompt in id order of dependencies, the way ComfyUI feeds FUNCTION its inputs."""
    results: dict[str, tuple[Any, ...]] = {}
    uis: dict[str, Any] = {}
    pending = dict(prompt)
    while pending:
        ready = [nid for nid, node in pending.items() if all(v[0] in results for v in _links(node))]
        assert ready, f"cycle or dangling link among {sorted(pending)}"
        for nid in ready:
            node = pending.pop(nid)
            kwargs = {k: results[v[0]][v[1]] if v in _links(node) else v for k, v in node["inputs"].items()}
            cls = NODE_CLASS_MAPPINGS.get(node["class_type"])
            if cls is None:
                results[nid] = CORE_STAND_INS[node["class_type"]](**kwargs)
                continue
            returned = getattr(cls(), cls.FUNCTION)(**kwargs)
            results[nid] = tuple(returned["result"]) if isinstance(returned, dict) else tuple(returned)
            uis[nid] = returned.get("ui") if isinstance(returned, dict) else None
    return {"results": results, "ui": uis}


def _links(node: dict[str, Any]) -> list[list[Any]]:
    return [v for v in node["inputs"].values() if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)]


def test_model_free_prompt_runs_through_the_pack_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scene_telemetry.nodes._comfy import FALLBACK_OUTPUT_ENV
    from scene_telemetry.telemetry import contract_errors, verify_marker

    monkeypatch.setenv(FALLBACK_OUTPUT_ENV, str(tmp_path))
    prompt = load(API_DIR / "scene_telemetry_model_free.json")
    ids = {node["class_type"]: nid for nid, node in prompt.items()}
    run = run_prompt_in_process(prompt)

    marker = tmp_path / "scene-telemetry" / "model-free" / "frame.done"
    body = verify_marker(marker)
    assert contract_errors(body, "done-marker") == []
    assert (body["SceneId"], body["FrameCount"]) == ("model-free", 8)
    ok, report = run["results"][ids["SceneTelemetry_RunSummaryValidator"]]
    assert ok is True, report
    assert run["ui"][ids["SceneTelemetry_RunSummaryValidator"]]["text"][0].startswith("OK")
    assert all(run["ui"][nid]["text"] for nid, n in prompt.items() if n["class_type"].startswith("SceneTelemetry_"))


@pytest.mark.parametrize("path", sorted(UI_DIR.glob("*.json")), ids=lambda p: p.name)
def test_groups_have_ids_the_frontend_accepts(path: Path) -> None:
    """Frontend 1.35 rejects groups with a null id ('Invalid workflow against zod schema')."""
    groups = json.loads(path.read_text())["groups"]
    ids = [g["id"] for g in groups]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids)
