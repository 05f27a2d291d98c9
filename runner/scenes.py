"""Scene lists, field → node-input mappings, workflow patching and validation.

Inputs of ``scene-telemetry run``:

- a workflow in API format: ``{node_id: {"class_type", "inputs", "_meta": {"title"}}}``;
- a scene list (JSON or YAML): a list of objects, or ``{"scenes": [...]}``; each has an
  ``id`` (a safe path component: it names the scene's output folder) and field values;
- a mapping (JSON or YAML): ``{field: target | [targets]}`` where a target is
  ``{"node": "3", "input": "seed"}``, ``{"title": "Positive", "input": "text"}`` or
  ``{"class": "EmptyImage", "input": "width"}``, or the shorthand text
  ``"id:3.seed"``, ``"title:Positive.text"``, ``"class:EmptyImage.width"`` (split at
  the last dot). A title or class must name exactly one node unless the target says
  ``"all": true``.

Everything is checked against the server's ``/object_info`` before anything is
queued; each problem is reported on its own line, naming the scene, field, node and
input. The runner's own inputs (``filename_prefix``/``scene_id`` of WriteDoneMarker,
``queue_policy``/``scene_id`` of the collector) are patched by :func:`apply_runner_inputs`.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from ..nodes._names import node_id
from ..telemetry._errors import InvalidInputError

_T = TypeVar("_T")

MAX_INPUT_FILE_BYTES = 16 * 1024 * 1024
"""Workflows, scene lists and mappings are hand-written; anything larger is a mistake."""

SCENE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")
"""Scene ids name output folders: one safe path component, no '..', no separators."""

PREFIX_FIELD = "filename_prefix"
"""A scene field the runner maps onto WriteDoneMarker itself when the mapping does not."""

MARKER_CLASS = node_id("WriteDoneMarker")
COLLECTOR_CLASS = node_id("Collector")

Selector = Literal["node", "title", "class"]
_SHORTHAND_SELECTORS: dict[str, Selector] = {"id": "node", "node": "node", "title": "title", "class": "class"}


@dataclass(frozen=True)
class Scene:
    """One entry of the scene list: its id and the values of its other fields."""

    id: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """Where one scene field goes: a node selected by id, title or class, and an input name."""

    selector: Selector
    value: str
    input: str
    all: bool = False

    def describe(self) -> str:
        return f"{self.selector} {self.value!r} input {self.input!r}"


FieldMapping = dict[str, list[Target]]


@dataclass(frozen=True)
class Problem:
    """One precise validation problem: where it is and what is wrong."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


# --------------------------------------------------------------------------- loading


def load_data_file(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON or YAML file (by suffix; unknown suffixes try JSON, then YAML)."""
    import yaml

    source = Path(path)
    try:
        size = source.stat().st_size
        if size > MAX_INPUT_FILE_BYTES:
            raise InvalidInputError(f"file is {size} bytes (limit {MAX_INPUT_FILE_BYTES})", path=source)
        text = source.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InvalidInputError(f"cannot read file: {exc.strerror or exc}", path=source) from exc
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"file is not UTF-8: {exc}", path=source) from exc
    suffix = source.suffix.lower()
    try:
        if suffix == ".json":
            return json.loads(text)
        if suffix in (".yaml", ".yml"):
            return yaml.safe_load(text)
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", path=source
        ) from exc
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"invalid YAML: {exc}", path=source) from exc


def _load_parsed(path: str | os.PathLike[str], parse: Callable[[Any], _T]) -> _T:
    """*parse* the data of the file at *path*; a problem that names no file is pinned on this one."""
    try:
        return parse(load_data_file(path))
    except InvalidInputError as exc:
        if exc.path is None:
            exc.path = str(path)
        raise


def load_workflow(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load an API-format workflow; refuse the editor (UI) format with a clear hint."""
    data = load_data_file(path)
    if isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data:
        raise InvalidInputError(
            "this is an editor (UI-format) workflow; export it with 'Save (API Format)' or use api_workflows/",
            path=str(path),
        )
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        data = data["prompt"]  # a saved POST /prompt body
    problems = workflow_shape_problems(data)
    if problems:
        raise InvalidInputError(f"not an API-format workflow: {problems[0]}", path=str(path))
    result: dict[str, Any] = data
    return result


def workflow_shape_problems(workflow: Any) -> list[Problem]:
    """Structural problems of an API-format prompt (no /object_info needed)."""
    if not isinstance(workflow, dict) or not workflow:
        return [Problem("workflow", "must be a non-empty object of node id → node")]
    problems = []
    for nid, node in workflow.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            problems.append(Problem(f"node {nid}", "needs a 'class_type' string"))
        elif not isinstance(node.get("inputs", {}), dict):
            problems.append(Problem(f"node {nid}", "'inputs' must be an object"))
    return problems


def parse_scenes(data: Any) -> list[Scene]:
    """Scenes from parsed data; every problem is reported at once."""
    if isinstance(data, dict) and "scenes" in data:
        data = data["scenes"]
    if not isinstance(data, list) or not data:
        raise InvalidInputError("the scene list must be a non-empty list of scenes (or {'scenes': [...]})")
    scenes: list[Scene] = []
    problems: list[str] = []
    seen: set[str] = set()
    for index, entry in enumerate(data):
        where = f"scene #{index + 1}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be an object with an 'id'")
            continue
        sid = entry.get("id")
        if not isinstance(sid, str) or not SCENE_ID_RE.match(sid) or ".." in sid:
            problems.append(f"{where}: 'id' must be 1-120 characters of letters, digits, '.', '_' or '-', got {sid!r}")
            continue
        if sid in seen:
            problems.append(f"{where}: duplicate id {sid!r}")
            continue
        seen.add(sid)
        scenes.append(Scene(sid, {k: v for k, v in entry.items() if k != "id"}))
    if problems:
        raise InvalidInputError("invalid scene list:\n  " + "\n  ".join(problems))
    return scenes


def load_scenes(path: str | os.PathLike[str]) -> list[Scene]:
    """Load a JSON/YAML scene list."""
    return _load_parsed(path, parse_scenes)


def parse_target(raw: Any, where: str) -> Target:
    """One mapping target from its object or shorthand form."""
    if isinstance(raw, str):
        return _parse_shorthand(raw, where)
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{where}: a target is an object or a 'selector:name.input' string, got {raw!r}")
    chosen = [k for k in ("node", "title", "class") if k in raw]
    unknown = sorted(set(raw) - {"node", "title", "class", "input", "all"})
    if len(chosen) != 1 or unknown:
        raise InvalidInputError(
            f"{where}: a target needs exactly one of 'node', 'title', 'class' (and 'input'); got keys {sorted(raw)}"
        )
    key = chosen[0]
    value, input_name = raw[key], raw.get("input")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidInputError(f"{where}: '{key}' must be text, got {value!r}")
    if not isinstance(input_name, str) or not input_name:
        raise InvalidInputError(f"{where}: 'input' must be a non-empty input name, got {input_name!r}")
    return Target(_SHORTHAND_SELECTORS[key], str(value), input_name, bool(raw.get("all", False)))


def _parse_shorthand(raw: str, where: str) -> Target:
    kind, sep, rest = raw.partition(":")
    name, dot, input_name = rest.rpartition(".")
    if not sep or kind not in _SHORTHAND_SELECTORS or not dot or not name or not input_name:
        raise InvalidInputError(
            f"{where}: {raw!r} is not 'id:<node>.<input>', 'title:<title>.<input>' or 'class:<class>.<input>'"
        )
    return Target(_SHORTHAND_SELECTORS[kind], name, input_name)


def parse_mapping(data: Any) -> FieldMapping:
    """``{field: target | [targets]}`` → :data:`FieldMapping`."""
    if isinstance(data, dict) and isinstance(data.get("mapping"), dict):
        data = data["mapping"]
    if not isinstance(data, dict):
        raise InvalidInputError("the mapping must be an object of scene field → target(s)")
    mapping: FieldMapping = {}
    for name, raw in data.items():
        if name == "id":
            raise InvalidInputError("the mapping cannot map 'id': it names the scene (map a copy, e.g. 'scene_id')")
        targets = raw if isinstance(raw, list) else [raw]
        if not targets:
            raise InvalidInputError(f"field {name!r}: empty target list")
        mapping[str(name)] = [parse_target(t, f"field {name!r}") for t in targets]
    return mapping


def load_mapping(path: str | os.PathLike[str]) -> FieldMapping:
    """Load a JSON/YAML mapping file."""
    return _load_parsed(path, parse_mapping)


# --------------------------------------------------------------------------- resolution


def node_title(node: Mapping[str, Any]) -> str | None:
    meta = node.get("_meta")
    title = meta.get("title") if isinstance(meta, dict) else None
    return title if isinstance(title, str) else None


def nodes_of_class(workflow: Mapping[str, Any], class_type: str) -> list[str]:
    """Ids of the nodes of one class, in id order."""
    return sorted((nid for nid, n in workflow.items() if n.get("class_type") == class_type), key=_id_key)


def resolve_target(workflow: Mapping[str, Any], target: Target) -> tuple[list[str], str | None]:
    """Node ids a target selects, or an explanation why it selects none/too many."""
    if target.selector == "node":
        return ([target.value], None) if target.value in workflow else ([], f"no node with id {target.value!r}")
    if target.selector == "title":
        ids = sorted((nid for nid, n in workflow.items() if node_title(n) == target.value), key=_id_key)
    else:
        ids = nodes_of_class(workflow, target.value)
    if not ids:
        return [], f"no node with {target.selector} {target.value!r}"
    if len(ids) > 1 and not target.all:
        return (
            [],
            f'{target.selector} {target.value!r} matches nodes {", ".join(ids)}; select one by id or add "all": true',
        )
    return ids, None


def _id_key(nid: str) -> tuple[int, str]:
    return (int(nid), nid) if nid.isdigit() else (1 << 62, nid)


# --------------------------------------------------------------------------- validation against /object_info


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
        return None if value in combo else f"value {value!r} is not one of {_preview(combo)}"
    if kind == "*":
        return None
    if kind == "INT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
            return f"expected an INT, got {value!r}"
    elif kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"expected a FLOAT, got {value!r}"
    elif kind == "STRING":
        if not isinstance(value, str):
            return f"expected a STRING, got {value!r}"
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            return f"expected a BOOLEAN, got {value!r}"
    else:
        return f"input of type {kind} needs a link from another node, got the value {value!r}"
    if kind in ("INT", "FLOAT"):
        low, high = options.get("min"), options.get("max")
        if isinstance(low, (int, float)) and value < low:
            return f"value {value!r} is smaller than min {low}"
        if isinstance(high, (int, float)) and value > high:
            return f"value {value!r} is bigger than max {high}"
    return None


def _preview(values: list[Any], limit: int = 8) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return f"[{shown}{', …' if len(values) > limit else ''}] ({len(values)} values)"


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def check_workflow(workflow: Mapping[str, Any], object_info: Mapping[str, Any]) -> list[Problem]:
    """Classes installed, input names known, required inputs present, links valid, values in range."""
    problems = workflow_shape_problems(workflow)
    if problems:
        return problems
    for nid in sorted(workflow, key=_id_key):
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


# --------------------------------------------------------------------------- patching


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
