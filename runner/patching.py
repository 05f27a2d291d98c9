"""A scene's prompt: the workflow with the scene's mapped values and the runner's own inputs set."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ..telemetry import InvalidInputError
from .scenes import COLLECTOR_CLASS, MARKER_CLASS, PREFIX_FIELD, FieldMapping, Scene, nodes_of_class, resolve_target


def patch_workflow(workflow: Mapping[str, Any], scene: Scene, mapping: FieldMapping) -> dict[str, Any]:
    """A deep copy of *workflow* with the scene's mapped values set (call after validation)."""
    prompt = copy.deepcopy(dict(workflow))
    for name, value in scene.values.items():
        for target in mapping.get(name, []):
            ids, why = resolve_target(prompt, target)
            if why:
                raise InvalidInputError(f"scene {scene.id!r} field {name!r}: {why}")
            for nid in ids:
                prompt[nid].setdefault("inputs", {})[target.input] = copy.deepcopy(value)
    return prompt


def default_prefix(run_id: str, scene_id: str) -> str:
    """Each scene's own folder, so markers of different scenes never collide."""
    return f"{run_id}/{scene_id}/frame"


def apply_runner_inputs(
    prompt: dict[str, Any], *, scene: Scene, mapping: FieldMapping, run_id: str, policy_json: str
) -> str | None:
    """Set what the runner owns; return the WriteDoneMarker ``filename_prefix`` (None without one).

    - WriteDoneMarker: ``filename_prefix`` = the scene's ``filename_prefix`` field when the
      mapping does not route it elsewhere, else :func:`default_prefix` unless the mapping set
      it; ``scene_id`` = the scene id unless the mapping sets ``scene_id``.
    - SceneTelemetryCollector: ``queue_policy`` = *policy_json*; ``scene_id`` as above.
    """
    markers = nodes_of_class(prompt, MARKER_CLASS)
    prefix: str | None = None
    for position, nid in enumerate(markers):
        inputs = prompt[nid].setdefault("inputs", {})
        if PREFIX_FIELD not in mapping:
            chosen = str(scene.values.get(PREFIX_FIELD) or default_prefix(run_id, scene.id))
            # A second marker node must not share the first one's .done file.
            inputs[PREFIX_FIELD] = chosen if position == 0 else f"{chosen}-{nid}"
        if "scene_id" not in mapping:  # the graph's own scene_id would name every scene alike
            inputs["scene_id"] = scene.id
        if prefix is None and isinstance(inputs.get(PREFIX_FIELD), str):
            prefix = inputs[PREFIX_FIELD]
    for nid in nodes_of_class(prompt, COLLECTOR_CLASS):
        inputs = prompt[nid].setdefault("inputs", {})
        inputs["queue_policy"] = policy_json
        if "scene_id" not in mapping:
            inputs["scene_id"] = scene.id
    return prefix
