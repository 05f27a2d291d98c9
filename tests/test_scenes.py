"""Scene lists, mappings, workflow patching and validation against the recorded /object_info."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from scene_telemetry.nodes import NODE_CLASSES
from scene_telemetry.runner.checks import check_mapping, check_workflow, required_classes
from scene_telemetry.runner.patching import apply_runner_inputs, patch_workflow
from scene_telemetry.runner.scenes import (
    COLLECTOR_CLASS,
    MARKER_CLASS,
    Scene,
    Target,
    load_mapping,
    load_scenes,
    load_workflow,
    parse_mapping,
    parse_scenes,
    resolve_target,
)
from scene_telemetry.telemetry import InvalidInputError


@pytest.fixture(scope="module")
def object_info() -> dict[str, Any]:
    """The recorded core /object_info plus this pack's classes as ComfyUI would list them."""
    recorded = Path(__file__).resolve().parent / "data" / "comfyui-0.8.0" / "object_info.json"
    info: dict[str, Any] = json.loads(recorded.read_text())
    for cls in NODE_CLASSES:
        info[cls.NAME] = {"input": cls.INPUT_TYPES(), "output": list(cls.RETURN_TYPES), "name": cls.NAME}
    # The collector may not be registered yet; the runner only needs its input names.
    info.setdefault(
        COLLECTOR_CLASS,
        {
            "input": {
                "required": {"done_marker": ["DONE_MARKER"], "scene_id": ["STRING", {"default": ""}]},
                "optional": {"queue_policy": ["STRING", {"default": ""}]},
            },
            "output": ["SCENE_TELEMETRY"],
        },
    )
    return info


def _workflow() -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 4, "color": 0},
            "_meta": {"title": "Canvas"},
        },
        "2": {
            "class_type": "ImageAddNoise",
            "inputs": {"image": ["1", 0], "seed": 1, "strength": 0.5},
            "_meta": {"title": "Noise"},
        },
        "3": {
            "class_type": MARKER_CLASS,
            "inputs": {"images": ["2", 0], "filename_prefix": "scene/frame", "scene_id": ""},
            "_meta": {"title": "Marker"},
        },
        "4": {
            "class_type": COLLECTOR_CLASS,
            "inputs": {"done_marker": ["3", 0], "scene_id": "", "queue_policy": ""},
        },
    }


MAPPING = {
    "seed": {"title": "Noise", "input": "seed"},
    "frames": "class:EmptyImage.batch_size",
    "size": [{"node": "1", "input": "width"}, "id:1.height"],
}


def test_load_scenes_json_and_yaml_agree(tmp_path: Path) -> None:
    scenes = [{"id": "intro", "seed": 3, "frames": 8}, {"id": "s-2", "seed": 4}]
    (tmp_path / "s.json").write_text(json.dumps({"scenes": scenes}))
    (tmp_path / "s.yaml").write_text("- id: intro\n  seed: 3\n  frames: 8\n- id: s-2\n  seed: 4\n")
    loaded = load_scenes(tmp_path / "s.json")
    assert loaded == load_scenes(tmp_path / "s.yaml")
    assert loaded[0] == Scene("intro", {"seed": 3, "frames": 8})


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ([], "non-empty list"),
        ([{"seed": 1}], "scene #1: 'id'"),
        ([{"id": "../up"}], "scene #1: 'id'"),
        ([{"id": "a/b"}], "scene #1: 'id'"),
        ([{"id": "a"}, {"id": "a"}], "scene #2: duplicate id 'a'"),
        (["a"], "scene #1: must be an object"),
    ],
)
def test_bad_scene_lists_are_refused_precisely(data: Any, needle: str) -> None:
    with pytest.raises(InvalidInputError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        parse_scenes(data)


def test_scene_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "scenes.json"
    bad.write_text('[{"id": "a",}]')
    with pytest.raises(InvalidInputError) as info:
        load_scenes(bad)
    assert info.value.path == str(bad)
    assert "line 1" in str(info.value)


@pytest.mark.parametrize(
    ("load", "text", "needle"),
    [
        (load_scenes, '[{"id": "a"}, {"id": "a"}]', "duplicate id 'a'"),
        (load_mapping, '{"id": "id:1.seed"}', "cannot map 'id'"),
    ],
)
def test_content_errors_of_a_file_name_the_file(tmp_path: Path, load: Any, text: str, needle: str) -> None:
    path = tmp_path / "input.json"
    path.write_text(text)
    with pytest.raises(InvalidInputError, match=needle) as info:
        load(path)
    assert info.value.path == str(path)


def test_mapping_forms_parse_to_the_same_targets(tmp_path: Path) -> None:
    mapping = parse_mapping(MAPPING)
    assert mapping["seed"] == [Target("title", "Noise", "seed")]
    assert mapping["frames"] == [Target("class", "EmptyImage", "batch_size")]
    assert mapping["size"] == [Target("node", "1", "width"), Target("node", "1", "height")]
    path = tmp_path / "m.yml"
    path.write_text("seed: {title: Noise, input: seed}\nframes: class:EmptyImage.batch_size\n")
    assert load_mapping(path)["frames"] == mapping["frames"]


@pytest.mark.parametrize(
    "raw",
    ["Noise.seed", "title:Noise", "color:Noise.seed", {"title": "Noise"}, {"title": "A", "node": "1", "input": "x"}],
)
def test_malformed_targets_are_refused(raw: Any) -> None:
    with pytest.raises(InvalidInputError, match="field 'seed'"):
        parse_mapping({"seed": raw})


def test_ambiguous_class_needs_all() -> None:
    workflow = _workflow()
    workflow["5"] = dict(workflow["1"], _meta={"title": "Other"})
    ids, why = resolve_target(workflow, Target("class", "EmptyImage", "width"))
    assert ids == [] and why is not None and "1, 5" in why
    ids, why = resolve_target(workflow, Target("class", "EmptyImage", "width", all=True))
    assert (ids, why) == (["1", "5"], None)


def test_valid_workflow_and_mapping_have_no_problems(object_info: dict[str, Any]) -> None:
    scenes = [Scene("a", {"seed": 5, "frames": 2, "size": 32, "filename_prefix": "x/a/frame"})]
    assert check_workflow(_workflow(), object_info) == []
    assert check_mapping(scenes, _workflow(), parse_mapping(MAPPING), object_info) == []


def test_workflow_problems_are_reported_one_per_line(object_info: dict[str, Any]) -> None:
    workflow = _workflow()
    workflow["1"]["inputs"]["width"] = 0  # below min 1
    workflow["1"]["inputs"]["colour"] = 3  # unknown name
    del workflow["1"]["inputs"]["height"]  # required
    workflow["2"]["inputs"]["image"] = ["9", 0]  # dangling link
    workflow["3"]["inputs"]["images"] = ["1", 0]
    workflow["4"]["inputs"]["done_marker"] = ["1", 0]  # IMAGE into DONE_MARKER
    workflow["6"] = {"class_type": "NoSuchNode", "inputs": {}}
    lines = [str(p) for p in check_workflow(workflow, object_info)]
    assert "node 1 (EmptyImage): required input 'height' is missing" in lines
    assert any(line.startswith("node 1 (EmptyImage): input 'colour' does not exist") for line in lines)
    assert "node 1 (EmptyImage) input 'width': value 0 is smaller than min 1" in lines
    assert "node 2 (ImageAddNoise) input 'image': links to node '9', which does not exist" in lines
    assert any("input 'done_marker': expects DONE_MARKER but node 1 output 0 is IMAGE" in line for line in lines)
    assert "node 6 (NoSuchNode): node class 'NoSuchNode' is not installed on the server" in lines
    assert len(lines) == 6


def test_scene_values_are_checked_against_the_mapped_input(object_info: dict[str, Any]) -> None:
    scenes = [
        Scene("ok", {"seed": 1}),
        Scene("neg", {"seed": -1, "frames": 5000}),
        Scene("typo", {"sed": 3, "size": "big"}),
    ]
    lines = [str(p) for p in check_mapping(scenes, _workflow(), parse_mapping(MAPPING), object_info)]
    assert "scene 'neg' field 'seed' → node 2 (ImageAddNoise) input 'seed': value -1 is smaller than min 0" in lines
    assert (
        "scene 'neg' field 'frames' → node 1 (EmptyImage) input 'batch_size': value 5000 is bigger than max 4096"
        in lines
    )
    assert "scene 'typo' field 'sed': is not in the mapping (map it or remove it)" in lines
    assert "scene 'typo' field 'size' → node 1 (EmptyImage) input 'width': expected an INT, got 'big'" in lines
    assert "scene 'typo' field 'size' → node 1 (EmptyImage) input 'height': expected an INT, got 'big'" in lines
    assert len(lines) == 5


def test_mapping_to_missing_node_or_input_is_reported(object_info: dict[str, Any]) -> None:
    mapping = parse_mapping({"seed": "title:Sampler.seed", "frames": "id:1.frames"})
    lines = [str(p) for p in check_mapping([], _workflow(), mapping, object_info)]
    assert lines[0] == "mapping field 'seed' → title 'Sampler' input 'seed': no node with title 'Sampler'"
    assert lines[1].startswith("mapping field 'frames' → node 1 (EmptyImage): has no input 'frames' (known: width,")


def test_combo_values_are_checked(object_info: dict[str, Any]) -> None:
    workflow = {
        "1": {"class_type": "VAELoader", "inputs": {"vae_name": "nonexistent.safetensors"}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    }
    lines = [str(p) for p in check_workflow(workflow, object_info)]
    assert len(lines) == 1 and lines[0].startswith("node 1 (VAELoader) input 'vae_name': value 'nonexistent")


def test_patch_sets_values_and_leaves_the_original_alone() -> None:
    workflow = _workflow()
    patched = patch_workflow(workflow, Scene("a", {"seed": 9, "size": 16}), parse_mapping(MAPPING))
    assert patched["2"]["inputs"]["seed"] == 9
    assert (patched["1"]["inputs"]["width"], patched["1"]["inputs"]["height"]) == (16, 16)
    assert workflow["2"]["inputs"]["seed"] == 1


def test_runner_inputs_give_each_scene_its_own_prefix_and_the_policy() -> None:
    mapping = parse_mapping(MAPPING)
    prefixes = []
    for sid in ("a", "b"):
        prompt = patch_workflow(_workflow(), Scene(sid), mapping)
        prefixes.append(
            apply_runner_inputs(prompt, scene=Scene(sid), mapping=mapping, run_id="run1", policy_json='{"x": 1}')
        )
        assert prompt["3"]["inputs"]["scene_id"] == sid
        assert prompt["4"]["inputs"] == {"done_marker": ["3", 0], "scene_id": sid, "queue_policy": '{"x": 1}'}
    assert prefixes == ["run1/a/frame", "run1/b/frame"]
    prompt = _workflow()
    scene = Scene("c", {"filename_prefix": "mine/c/f"})
    assert apply_runner_inputs(prompt, scene=scene, mapping=mapping, run_id="r", policy_json="{}") == "mine/c/f"


def test_load_workflow_refuses_ui_format(tmp_path: Path) -> None:
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": [], "last_node_id": 0}))
    with pytest.raises(InvalidInputError, match="UI-format"):
        load_workflow(ui)
    api = tmp_path / "api.json"
    api.write_text(json.dumps(_workflow()))
    assert required_classes(load_workflow(api)) == sorted(
        ["EmptyImage", "ImageAddNoise", MARKER_CLASS, COLLECTOR_CLASS]
    )
