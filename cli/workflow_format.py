"""Workflow formats: editor (UI/litegraph) JSON, API prompts, and checks against ``/object_info``.

The editor saves a graph as nodes with *positional* ``widgets_values`` and a link table;
``POST /prompt`` takes the API format ``{id: {"class_type", "inputs": {name: value | [src, slot]}}}``.
Mapping one onto the other needs each node's ``/object_info`` entry, because only that says which
inputs are widgets and in which order the editor lays them out. The same entries let us check a
prompt the way ``validate_prompt`` would (names, required inputs, link types, ranges, combos)
without a server. Pure functions over JSON-like data: no I/O, no ComfyUI import.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..telemetry import InvalidInputError

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


def input_spec(node_info: Mapping[str, Any], name: str) -> tuple[list[Any], bool] | None:
    """``(spec, required)`` of a visible input, or ``None`` if the node has no such input."""
    inputs = node_info.get("input", {})
    for section, required in (("required", True), ("optional", False)):
        if name in inputs.get(section, {}):
            return list(inputs[section][name]), required
    return None


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


def combo_values(spec: list[Any]) -> list[Any]:
    """Allowed values of a combo in either form: ``[[values], {…}]`` or ``["COMBO", {"options": …}]``."""
    if isinstance(spec[0], list):
        return list(spec[0])
    return list(spec_options(spec).get("options", []))


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
    """Everything ``validate_prompt`` would reject in an API prompt, as readable lines (empty = valid).

    With ``check_model_files=False`` a combo value naming a model file (``*.safetensors`` …) that this
    ``object_info`` does not list is accepted: object_info lists only the files of the server it came from.
    """
    problems: list[str] = []
    for node_id, node in prompt.items():
        info = object_info.get(node.get("class_type", ""))
        if info is None:
            problems.append(f"{node_id}: unknown node type {node.get('class_type')!r}")
            continue
        where = f"{node_id} ({node['class_type']})"
        for name, _spec, required in ordered_inputs(info):
            if required and name not in node.get("inputs", {}):
                problems.append(f"{where}: required input {name!r} missing")
        for name, value in node.get("inputs", {}).items():
            found = input_spec(info, name)
            if found is None:
                problems.append(f"{where}: no input named {name!r}")
            elif _is_link(value):
                problems.extend(_link_problems(where, name, found[0], value, prompt, object_info))
            else:
                problems.extend(_value_problems(where, name, found[0], value, check_model_files))
    return problems


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _link_problems(
    where: str, name: str, spec: list[Any], link: list[Any], prompt: Mapping[str, Any], object_info: Mapping[str, Any]
) -> list[str]:
    source = prompt.get(link[0])
    source_info = object_info.get(source.get("class_type", "")) if source else None
    if source_info is None:
        return [f"{where}: input {name!r} links to missing or unknown node {link[0]!r}"]
    outputs = source_info["output"]
    if not 0 <= link[1] < len(outputs):
        return [f"{where}: input {name!r} links to output {link[1]} of node {link[0]}, which has {len(outputs)}"]
    if not types_compatible(str(outputs[link[1]]), spec_type(spec)):
        return [f"{where}: input {name!r} wants {spec_type(spec)}, node {link[0]} gives {outputs[link[1]]}"]
    return []


def _value_problems(where: str, name: str, spec: list[Any], value: Any, check_model_files: bool) -> list[str]:
    kind, options = spec_type(spec), spec_options(spec)
    if kind in ("INT", "FLOAT"):
        numeric = (int,) if kind == "INT" else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric):
            return [f"{where}: {name}={value!r} is not {kind}"]
        if "min" in options and value < options["min"]:
            return [f"{where}: {name}={value} is below min {options['min']}"]
        if "max" in options and value > options["max"]:
            return [f"{where}: {name}={value} is above max {options['max']}"]
        return []
    if kind == "BOOLEAN":
        return [] if isinstance(value, bool) else [f"{where}: {name}={value!r} is not BOOLEAN"]
    if kind == "STRING":
        return [] if isinstance(value, str) else [f"{where}: {name}={value!r} is not STRING"]
    if kind == "COMBO":
        allowed = combo_values(spec)
        if value in allowed or (not check_model_files and is_model_file(value)):
            return []
        return [f"{where}: {name}={value!r} is not one of {allowed[:8]}{'…' if len(allowed) > 8 else ''}"]
    return [f"{where}: input {name!r} ({kind}) needs a link, got {value!r}"]


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
        found = input_spec(info, socket["name"])
        if found is None:
            problems.append(f"{where}: no input named {socket['name']!r}")
        elif socket.get("type") != spec_type(found[0]):
            problems.append(f"{where}: input {socket['name']!r} typed {socket.get('type')}, node says {found[0][0]}")
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
