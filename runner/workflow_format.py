"""Workflow formats: editor (UI/litegraph) JSON, API prompts, and checks against ``/object_info``.

The editor saves a graph as nodes with *positional* ``widgets_values`` and a link table;
``POST /prompt`` takes the API format ``{id: {"class_type", "inputs": {name: value | [src, slot]}}}``.
Mapping one onto the other needs each node's ``/object_info`` entry, because only that says which
inputs are widgets and in which order the editor lays them out. The same entries let us check a
prompt the way ``validate_prompt`` would (names, required inputs, link types, ranges, combos)
without a server. Pure functions over JSON-like data: no I/O, no ComfyUI import.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..telemetry import InvalidInputError
from .checks import check_workflow, input_spec

JsonDict = dict[str, Any]

# Input types the editor renders as widgets; everything else (IMAGE, MODEL, "*", …) is a socket.
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
# The editor appends a "control_after_generate" widget to these INT inputs even without the option.
LEGACY_SEED_NAMES = frozenset({"seed", "noise_seed"})
# Editor-only node types that never reach the server.
VIRTUAL_NODE_TYPES = frozenset({"Note", "MarkdownNote"})
# A combo value with one of these suffixes names a model file; an install without that file
# lists other names, so value checks for them are optional (ComfyUI checks at queue time).
MODEL_FILE_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
# litegraph node modes: 0 always, 2 never (muted), 4 bypass.
MODE_ALWAYS = 0
MODE_MUTED = 2


@dataclass(frozen=True)
class WidgetSlot:
    """One entry of a node's ``widgets_values``: an input's widget or the seed control after it."""

    name: str
    spec: list[Any]
    is_control: bool = False


def node_info_from_class(node_id: str, cls: type[Any], display_name: str | None = None) -> JsonDict:
    """The ``/object_info`` entry ComfyUI's server builds for a V1 node class (``server.node_info``)."""
    input_types = cls.INPUT_TYPES()
    outputs = list(cls.RETURN_TYPES)
    info = {
        "input": input_types,
        "input_order": {section: list(inputs) for section, inputs in input_types.items()},
        "output": outputs,
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(outputs))),
        "output_name": list(getattr(cls, "RETURN_NAMES", outputs)),
        "name": node_id,
        "display_name": display_name or node_id,
        "description": getattr(cls, "DESCRIPTION", ""),
        "python_module": "custom_nodes.scene-telemetry",
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
    }
    # The server sends JSON: tuples become lists, and anything unserialisable would fail there too.
    result: JsonDict = json.loads(json.dumps(info))
    return result


def object_info_for(mappings: Mapping[str, type[Any]], display_names: Mapping[str, str] | None = None) -> JsonDict:
    """``/object_info`` entries for a pack's ``NODE_CLASS_MAPPINGS``."""
    names = display_names or {}
    return {node_id: node_info_from_class(node_id, cls, names.get(node_id)) for node_id, cls in mappings.items()}


def ordered_inputs(node_info: Mapping[str, Any]) -> list[tuple[str, list[Any], bool]]:
    """Visible inputs as ``(name, spec, required)``: required then optional, in ``input_order``."""
    inputs = node_info.get("input", {})
    order = node_info.get("input_order", {})
    result = []
    for section, required in (("required", True), ("optional", False)):
        for name in order.get(section, list(inputs.get(section, {}))):
            result.append((name, list(inputs[section][name]), required))
    return result


def spec_type(spec: list[Any]) -> str:
    """The type name of an input spec; a bare list of values is a combo."""
    return "COMBO" if isinstance(spec[0], list) else str(spec[0])


def spec_options(spec: list[Any]) -> dict[str, Any]:
    return dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {}


def is_widget(spec: list[Any]) -> bool:
    return spec_type(spec) in WIDGET_TYPES and not spec_options(spec).get("forceInput", False)


def widget_slots(node_info: Mapping[str, Any]) -> list[WidgetSlot]:
    """The layout of ``widgets_values`` for this node, as the editor creates the widgets."""
    slots = []
    for name, spec, _required in ordered_inputs(node_info):
        if not is_widget(spec):
            continue
        slots.append(WidgetSlot(name, spec))
        options = spec_options(spec)
        legacy_seed = spec_type(spec) == "INT" and name in LEGACY_SEED_NAMES
        if options.get("control_after_generate", legacy_seed):
            slots.append(WidgetSlot("control_after_generate", spec, is_control=True))
    return slots


def types_compatible(output_type: str, input_type: str) -> bool:
    """ComfyUI's link check: equal, ``*`` on either side, or overlapping comma-separated unions."""
    if output_type == "*" or input_type == "*":
        return True
    return bool(set(output_type.split(",")) & set(input_type.split(",")))


def ui_to_api(workflow: Mapping[str, Any], object_info: Mapping[str, Any]) -> JsonDict:
    """Convert an editor workflow to an API prompt (what the editor's "Export (API)" writes).

    Supports plain graphs: muted and editor-only nodes are dropped; bypassed nodes, reroutes and
    subgraphs must be resolved in the editor first (``InvalidInputError`` otherwise).
    """
    links = {int(link[0]): link for link in workflow.get("links", [])}
    prompt: JsonDict = {}
    for node in workflow.get("nodes", []):
        if node["type"] in VIRTUAL_NODE_TYPES or node.get("mode", MODE_ALWAYS) == MODE_MUTED:
            continue
        if node.get("mode", MODE_ALWAYS) != MODE_ALWAYS:
            raise InvalidInputError(f"node {node['id']} is bypassed; export the API prompt from the editor")
        info = object_info.get(node["type"])
        if info is None:
            raise InvalidInputError(f"node {node['id']}: unknown node type {node['type']!r}")
        inputs = _widget_inputs(node, info)
        for socket in node.get("inputs", []):
            if socket.get("link") is not None:
                link = links[int(socket["link"])]
                inputs[socket["name"]] = [str(link[1]), int(link[2])]
        title = node.get("title") or info.get("display_name") or node["type"]
        prompt[str(node["id"])] = {"inputs": inputs, "class_type": node["type"], "_meta": {"title": title}}
    return prompt


def _widget_inputs(node: Mapping[str, Any], info: Mapping[str, Any]) -> JsonDict:
    slots = widget_slots(info)
    values = list(node.get("widgets_values", []))
    if len(values) != len(slots):
        raise InvalidInputError(
            f"node {node['id']} ({node['type']}): {len(values)} widget values, expected {len(slots)}",
            field="widgets_values",
        )
    return {slot.name: value for slot, value in zip(slots, values, strict=True) if not slot.is_control}


def prompt_problems(
    prompt: Mapping[str, Any], object_info: Mapping[str, Any], *, check_model_files: bool = True
) -> list[str]:
    """What ``validate_prompt`` would reject in an API prompt, one line each (empty = valid).

    The runner's own check (:func:`.scenes.check_workflow`) does the work. With
    ``check_model_files=False`` a combo value naming a model file (``*.safetensors`` …) is accepted
    even if this ``object_info`` does not list it: the list holds only the files of the server it came from.
    """
    info = object_info if check_model_files else with_model_files(prompt, object_info)
    return [str(problem) for problem in check_workflow(prompt, info)]


def with_model_files(prompt: Mapping[str, Any], object_info: Mapping[str, Any]) -> JsonDict:
    """A copy of *object_info* whose combos also offer the model-file values *prompt* uses."""
    info = dict(object_info)
    for node in prompt.values():
        class_type = node.get("class_type", "")
        if class_type not in info:
            continue
        for name, value in node.get("inputs", {}).items():
            spec = input_spec(info[class_type], name)
            if spec is None or spec_type(spec) != "COMBO" or not is_model_file(value):
                continue
            info[class_type] = entry = copy.deepcopy(info[class_type])
            section = "required" if name in entry["input"].get("required", {}) else "optional"
            entry["input"][section][name] = _with_value(spec, value)
    return info


def _with_value(spec: list[Any], value: str) -> list[Any]:
    if isinstance(spec[0], list):
        return [[*spec[0], value], *spec[1:]]
    options = spec_options(spec)
    return [spec[0], {**options, "options": [*options.get("options", []), value]}]


def is_model_file(value: Any) -> bool:
    return isinstance(value, str) and value.lower().endswith(MODEL_FILE_SUFFIXES)


def workflow_problems(workflow: Mapping[str, Any], object_info: Mapping[str, Any]) -> list[str]:
    """Structural problems of an editor workflow: unknown types, widget counts, socket names and link table."""
    problems: list[str] = []
    nodes = {int(node["id"]): node for node in workflow.get("nodes", [])}
    links = {int(link[0]): link for link in workflow.get("links", [])}
    if nodes and workflow.get("last_node_id", -1) < max(nodes):
        problems.append("last_node_id is below the highest node id")
    if links and workflow.get("last_link_id", -1) < max(links):
        problems.append("last_link_id is below the highest link id")
    for node in nodes.values():
        info = object_info.get(node["type"])
        if info is None:
            if node["type"] not in VIRTUAL_NODE_TYPES:
                problems.append(f"node {node['id']}: unknown node type {node['type']!r}")
            continue
        problems.extend(_node_problems(node, info))
    for link in links.values():
        problems.extend(_link_table_problems(link, nodes, object_info))
    return problems


def _node_problems(node: Mapping[str, Any], info: Mapping[str, Any]) -> list[str]:
    where = f"node {node['id']} ({node['type']})"
    problems = []
    slots = widget_slots(info)
    if len(node.get("widgets_values", [])) != len(slots):
        names = [slot.name for slot in slots]
        problems.append(f"{where}: {len(node.get('widgets_values', []))} widget values for widgets {names}")
    for socket in node.get("inputs", []):
        spec = input_spec(info, socket["name"])
        if spec is None:
            problems.append(f"{where}: no input named {socket['name']!r}")
        elif socket.get("type") != spec_type(spec):
            problems.append(f"{where}: input {socket['name']!r} typed {socket.get('type')}, node says {spec[0]}")
    outputs = node.get("outputs", [])
    if [out.get("type") for out in outputs] != list(info["output"]):
        problems.append(f"{where}: outputs {[out.get('type') for out in outputs]} != {info['output']}")
    if node.get("properties", {}).get("Node name for S&R") != node["type"]:
        problems.append(f"{where}: properties['Node name for S&R'] should be {node['type']!r}")
    return problems


def _link_table_problems(
    link: list[Any], nodes: Mapping[int, Mapping[str, Any]], object_info: Mapping[str, Any]
) -> list[str]:
    link_id, src_id, src_slot, dst_id, dst_slot, link_type = link
    src, dst = nodes.get(int(src_id)), nodes.get(int(dst_id))
    if src is None or dst is None:
        return [f"link {link_id}: node {src_id if src is None else dst_id} does not exist"]
    problems = []
    outputs, inputs = src.get("outputs", []), dst.get("inputs", [])
    if src_slot >= len(outputs) or link_id not in (outputs[src_slot].get("links") or []):
        problems.append(f"link {link_id}: not listed on output {src_slot} of node {src_id}")
    elif not types_compatible(str(outputs[src_slot].get("type")), str(link_type)):
        given = outputs[src_slot].get("type")
        problems.append(f"link {link_id}: typed {link_type}, output {src_slot} of node {src_id} gives {given}")
    if dst_slot >= len(inputs) or inputs[dst_slot].get("link") != link_id:
        problems.append(f"link {link_id}: not the link of input {dst_slot} of node {dst_id}")
    elif not types_compatible(str(link_type), str(inputs[dst_slot].get("type"))):
        problems.append(f"link {link_id}: {link_type} into {inputs[dst_slot]['name']} ({inputs[dst_slot]['type']})")
    return problems


# --------------------------------------------------------------------------- editor workflows given to `run`


def is_editor_workflow(data: Any) -> bool:
    """True for the editor's (UI/litegraph) format: ``{"nodes": [...], "links": [...], ...}``."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def editor_required_classes(workflow: Mapping[str, Any]) -> list[str]:
    """The node classes an editor workflow sends to the server (editor-only and muted nodes left out)."""
    classes = set()
    for node in workflow.get("nodes") or []:
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            raise InvalidInputError("editor workflow: every node needs a 'type' string")
        if node["type"] not in VIRTUAL_NODE_TYPES and node.get("mode", MODE_ALWAYS) != MODE_MUTED:
            classes.add(node["type"])
    return sorted(classes)


def editor_to_api(workflow: Mapping[str, Any], object_info: Mapping[str, Any]) -> JsonDict:
    """:func:`ui_to_api` for a user's file: anything malformed is one :class:`InvalidInputError` line."""
    try:
        return ui_to_api(workflow, object_info)
    except InvalidInputError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"editor workflow cannot be converted ({type(exc).__name__}: {exc}); "
            "export it with 'Save (API Format)' instead"
        ) from None
