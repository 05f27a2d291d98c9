"""The workflow and the mapping checked against the server's ``/object_info`` before anything is queued.

Each problem is one :class:`scenes.Problem` naming the scene, field, node and input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from .scenes import (
    MARKER_CLASS,
    PREFIX_FIELD,
    FieldMapping,
    Problem,
    Scene,
    node_id_key,
    nodes_of_class,
    preview,
    resolve_target,
    workflow_shape_problems,
)


def input_spec(info: Mapping[str, Any], input_name: str) -> list[Any] | None:
    """The ``[TYPE, options]`` spec of a required/optional input of one class, or None."""
    inputs = info.get("input") or {}
    for section in ("required", "optional"):
        spec = (inputs.get(section) or {}).get(input_name)
        if spec is not None:
            return list(spec) if isinstance(spec, (list, tuple)) else [spec]
    return None


def _combo_options(spec: list[Any]) -> list[Any] | None:
    kind = spec[0]
    if isinstance(kind, list):
        return kind
    if kind == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        options = spec[1].get("options")
        return list(options) if isinstance(options, list) else None
    return None


def value_problem(spec: list[Any], value: Any) -> str | None:
    """Why *value* is not acceptable for an input of this spec (None when it is)."""
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    combo = _combo_options(spec)
    if combo is not None:
        return None if value in combo else f"value {preview(value)} is not one of {_preview(combo)}"
    if kind == "*":
        return None
    if kind == "INT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _whole(value):
            return f"expected an INT, got {preview(value)}"
    elif kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"expected a FLOAT, got {preview(value)}"
    elif kind == "STRING":
        if not isinstance(value, str):
            return f"expected a STRING, got {preview(value)}"
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            return f"expected a BOOLEAN, got {preview(value)}"
    else:
        return f"input of type {kind} needs a link from another node, got the value {preview(value)}"
    if kind in ("INT", "FLOAT"):
        low, high = options.get("min"), options.get("max")
        if isinstance(low, (int, float)) and value < low:
            return f"value {preview(value)} is smaller than min {low}"
        if isinstance(high, (int, float)) and value > high:
            return f"value {preview(value)} is bigger than max {high}"
    return None


def _whole(value: int | float) -> bool:
    return isinstance(value, int) or value.is_integer()  # float(int) overflows past 1e308


def _preview(values: list[Any], limit: int = 8) -> str:
    shown = ", ".join(preview(v) for v in values[:limit])
    return f"[{shown}{', …' if len(values) > limit else ''}] ({len(values)} values)"


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def check_workflow(workflow: Mapping[str, Any], object_info: Mapping[str, Any]) -> list[Problem]:
    """Classes installed, input names known, required inputs present, links valid, values in range."""
    problems = workflow_shape_problems(workflow)
    if problems:
        return problems
    for nid in sorted(workflow, key=node_id_key):
        node = workflow[nid]
        cls = node["class_type"]
        where = f"node {nid} ({cls})"
        info = object_info.get(cls)
        if info is None:
            problems.append(Problem(where, f"node class {cls!r} is not installed on the server"))
            continue
        inputs: dict[str, Any] = node.get("inputs", {})
        required = (info.get("input") or {}).get("required") or {}
        for name in required:
            if name not in inputs:
                problems.append(Problem(where, f"required input {name!r} is missing"))
        for name, value in inputs.items():
            spec = input_spec(info, name)
            if spec is None:
                problems.append(
                    Problem(where, f"input {name!r} does not exist (known: {', '.join(_known_inputs(info))})")
                )
            elif _is_link(value):
                problems.extend(_link_problems(workflow, object_info, where, name, spec, value))
            else:
                message = value_problem(spec, value)
                if message:
                    problems.append(Problem(f"{where} input {name!r}", message))
    return problems


def _known_inputs(info: Mapping[str, Any]) -> list[str]:
    """Input names in the server's declared order (``input_order``), else the dict order."""
    inputs = info.get("input_order") or info.get("input") or {}
    return [str(n) for section in ("required", "optional") for n in (inputs.get(section) or [])]


def _link_problems(
    workflow: Mapping[str, Any], object_info: Mapping[str, Any], where: str, name: str, spec: list[Any], link: list[Any]
) -> list[Problem]:
    source_id, index = link
    source = workflow.get(source_id)
    if source is None:
        return [Problem(f"{where} input {name!r}", f"links to node {source_id!r}, which does not exist")]
    source_info = object_info.get(source["class_type"])
    if source_info is None:
        return []  # already reported as a missing class
    outputs = source_info.get("output") or []
    if not 0 <= index < len(outputs):
        return [
            Problem(f"{where} input {name!r}", f"links to output {index} of node {source_id}, which has {len(outputs)}")
        ]
    produced, wanted = outputs[index], spec[0]
    if isinstance(wanted, list) or wanted == "COMBO":
        wanted = "COMBO"
        produced = "COMBO" if isinstance(produced, list) or produced == "COMBO" else produced
    if "*" in (produced, wanted) or produced == wanted:
        return []
    if isinstance(produced, str) and isinstance(wanted, str) and set(produced.split(",")) & set(wanted.split(",")):
        return []
    return [Problem(f"{where} input {name!r}", f"expects {wanted} but node {source_id} output {index} is {produced}")]


def check_mapping(
    scenes: Iterable[Scene], workflow: Mapping[str, Any], mapping: FieldMapping, object_info: Mapping[str, Any]
) -> list[Problem]:
    """Every mapped target resolves to a real input; every scene value fits it; no field goes unmapped."""
    problems: list[Problem] = []
    resolved: dict[str, list[tuple[str, str, list[Any] | None]]] = {}
    for name, targets in mapping.items():
        resolved[name] = []
        for target in targets:
            ids, why = resolve_target(workflow, target)
            if why:
                problems.append(Problem(f"mapping field {name!r} → {target.describe()}", why))
            for nid in ids:
                cls = workflow[nid]["class_type"]
                info = object_info.get(cls)
                spec = input_spec(info, target.input) if info is not None else None
                if info is not None and spec is None:
                    problems.append(
                        Problem(
                            f"mapping field {name!r} → node {nid} ({cls})",
                            f"has no input {target.input!r} (known: {', '.join(_known_inputs(info))})",
                        )
                    )
                resolved[name].append((nid, target.input, spec))
    implicit = set(runner_mapped_fields(workflow, mapping))
    for scene in scenes:
        for name, value in scene.values.items():
            if name not in mapping and name not in implicit:
                problems.append(
                    Problem(f"scene {scene.id!r} field {name!r}", "is not in the mapping (map it or remove it)")
                )
                continue
            for nid, input_name, spec in resolved.get(name, []):
                message = value_problem(spec, value) if spec is not None else None
                if message:
                    cls = workflow[nid]["class_type"]
                    problems.append(
                        Problem(f"scene {scene.id!r} field {name!r} → node {nid} ({cls}) input {input_name!r}", message)
                    )
    return problems


def runner_mapped_fields(workflow: Mapping[str, Any], mapping: FieldMapping) -> list[str]:
    """Scene fields the runner applies itself: ``filename_prefix`` when a WriteDoneMarker exists."""
    if PREFIX_FIELD not in mapping and nodes_of_class(workflow, MARKER_CLASS):
        return [PREFIX_FIELD]
    return []


def required_classes(workflow: Mapping[str, Any]) -> list[str]:
    """Every class the workflow uses (what preflight checks the server has installed)."""
    return sorted({str(n.get("class_type")) for n in workflow.values() if isinstance(n, dict)})
