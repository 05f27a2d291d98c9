"""Scene lists and field → node-input mappings: loading, parsing, resolving targets.

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
queued (:mod:`runner.checks`); each problem is reported on its own line, naming the
scene, field, node and input. The scene's values and the runner's own inputs
(``filename_prefix``/``scene_id`` of WriteDoneMarker, ``queue_policy``/``scene_id`` of the
collector) are patched in by :mod:`runner.patching`.
"""

from __future__ import annotations

import json
import math
import os
import re
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from ..nodes._names import node_id
from ..telemetry import InvalidInputError, read_bounded

_T = TypeVar("_T")

MAX_INPUT_FILE_BYTES = 16 * 1024 * 1024
"""Workflows, scene lists and mappings are hand-written; anything larger is a mistake."""
MAX_SCENES = 10_000
"""Scenes in one scene list: a run of more is split into several runs (each scene is a prompt and a folder)."""
MAX_VALUE_BYTES = 64 * 1024
"""A scene field value's size (its text, or the sum over a list/object): a long prompt is a few kB."""
MAX_NESTING = 64
"""Levels of lists/objects in any input file: an API workflow needs 4, a scene value a few."""
MAX_FILE_VALUES = 1_000_000
"""Values in one input file once YAML aliases are expanded (a 'billion laughs' file expands to 10^9)."""
MAX_INT_DIGITS = 4300
"""Python's own limit for int ↔ text conversion (``sys.get_int_max_str_digits``)."""
PREVIEW_CHARS = 80
"""Error messages show a value at most this long (:func:`preview`)."""

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


def preview(value: Any) -> str:
    """A bounded ``repr`` for error messages: at most :data:`PREVIEW_CHARS`, whatever the value's size or depth.

    ``repr`` itself would expand a YAML alias bomb (10^9 strings) or raise on an int of
    more than 4,300 digits; this never builds more than a few hundred characters.
    """
    shown = _PREVIEW.repr(value)
    return shown if len(shown) <= PREVIEW_CHARS else shown[: PREVIEW_CHARS - 1] + "…"


class _BoundedRepr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 64:
            return f"<integer of {x.bit_length()} bits>"
        return repr(x)


_PREVIEW = _BoundedRepr()
_PREVIEW.maxlevel, _PREVIEW.maxlist, _PREVIEW.maxdict, _PREVIEW.maxtuple = 3, 4, 4, 4
_PREVIEW.maxstring, _PREVIEW.maxother = PREVIEW_CHARS, PREVIEW_CHARS


def load_data_file(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON or YAML file (by suffix; unknown suffixes try JSON, then YAML), within the input limits.

    Every way a hostile file can fail is :class:`InvalidInputError` with one line: not a
    regular file or over :data:`MAX_INPUT_FILE_BYTES` (unread), not UTF-8, malformed,
    nested deeper than :data:`MAX_NESTING`, more than :data:`MAX_FILE_VALUES` values once
    YAML aliases are expanded, an integer of more than :data:`MAX_INT_DIGITS` digits.
    """
    source = Path(path)
    raw = read_bounded(source, MAX_INPUT_FILE_BYTES)  # a FIFO or /dev/zero: refused, never blocked on or buffered
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"file is not UTF-8: {exc}", path=source) from exc
    try:
        data = _parse(text, source.suffix.lower())
    except RecursionError:
        raise InvalidInputError(f"nested more than {MAX_NESTING} levels deep", path=source) from None
    except ValueError as exc:  # an integer over Python's 4,300-digit limit (JSON and YAML alike)
        reason = _first_line(str(exc))
        if "integer string conversion" in reason:
            reason = f"an integer has more than {MAX_INT_DIGITS} digits"
        raise InvalidInputError(reason, path=source) from None
    problem = tree_problem(data)
    if problem is not None:
        raise InvalidInputError(problem, path=source)
    return data


def _parse(text: str, suffix: str) -> Any:
    """JSON or YAML; a syntax error is one line with its position (InvalidInputError without a path)."""
    import yaml

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
        raise InvalidInputError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except yaml.MarkedYAMLError as exc:
        where = f" at line {exc.problem_mark.line + 1} column {exc.problem_mark.column + 1}" if exc.problem_mark else ""
        raise InvalidInputError(f"invalid YAML{where}: {exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"invalid YAML: {_first_line(str(exc))}") from exc


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def tree_problem(data: Any, *, max_values: int = MAX_FILE_VALUES) -> str | None:
    """Why parsed *data* is too big or too deep to use (None when it is fine), without recursion.

    Values are counted as a consumer sees them, so a value reached through several YAML
    aliases counts every time: the walk stops after *max_values*, long before a
    'billion laughs' file is expanded.
    """
    stack: list[tuple[Any, int]] = [(data, 1)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > max_values:
            return f"more than {max_values:,} values once YAML aliases are expanded (an alias bomb?)"
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _MAX_INT_BITS:
            return f"an integer has more than {MAX_INT_DIGITS} digits"
        if isinstance(value, (dict, list)):
            if depth > MAX_NESTING:
                return f"nested more than {MAX_NESTING} levels deep"
            children = list(value.keys()) + list(value.values()) if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return None


_MAX_INT_BITS = int(MAX_INT_DIGITS * math.log2(10))


def value_size(value: Any, limit: int = MAX_VALUE_BYTES) -> int:
    """Approximate size of a scene value in bytes (its texts, plus 8 per other scalar); stops past *limit*."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item.encode("utf-8", "surrogatepass"))
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            total += 8
    return total


def _load_parsed(path: str | os.PathLike[str], parse: Callable[[Any], _T]) -> _T:
    """*parse* the data of the file at *path*; a problem that names no file is pinned on this one."""
    try:
        return parse(load_data_file(path))
    except InvalidInputError as exc:
        if exc.path is None:
            exc.path = str(path)
        raise


def load_workflow(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load an API-format workflow; refuse the editor (UI) format with a clear hint.

    (``run`` itself also takes the editor format: :func:`runner.prepare.prepare_run` converts it.)
    """
    data = load_data_file(path)
    if isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data:
        raise InvalidInputError(
            "this is an editor (UI-format) workflow; export it with 'Save (API Format)' or use api_workflows/",
            path=str(path),
        )
    try:
        return parse_workflow(data)
    except InvalidInputError as exc:
        exc.path = str(path)
        raise


def parse_workflow(data: Any) -> dict[str, Any]:
    """An API-format prompt from parsed data (a saved ``POST /prompt`` body is unwrapped)."""
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        data = data["prompt"]
    problems = workflow_shape_problems(data)
    if problems:
        raise InvalidInputError(f"not an API-format workflow: {problems[0]}")
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
    if len(data) > MAX_SCENES:
        raise InvalidInputError(f"the scene list has {len(data)} scenes (limit {MAX_SCENES}; split the run)")
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
            shown = preview(sid)
            problems.append(f"{where}: 'id' must be 1-120 characters of letters, digits, '.', '_' or '-', got {shown}")
            continue
        oversized = [k for k, v in entry.items() if value_size(v) > MAX_VALUE_BYTES]
        if oversized:
            problems.append(
                f"scene {sid!r} field {preview(oversized[0])}: value is over {MAX_VALUE_BYTES // 1024} KiB "
                f"(limit {MAX_VALUE_BYTES // 1024} KiB per field value): {preview(entry[oversized[0]])}"
            )
            continue
        if sid in seen:
            problems.append(f"{where}: duplicate id {sid!r}")
            continue
        seen.add(sid)
        scenes.append(Scene(sid, {k: v for k, v in entry.items() if k != "id"}))
    if len(problems) == 1:
        raise InvalidInputError(f"invalid scene list: {problems[0]}")
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
        raise InvalidInputError(f"{where}: a target is an object or a 'selector:name.input' string, got {preview(raw)}")
    chosen = [k for k in ("node", "title", "class") if k in raw]
    unknown = sorted(set(raw) - {"node", "title", "class", "input", "all"})
    if len(chosen) != 1 or unknown:
        raise InvalidInputError(
            f"{where}: a target needs exactly one of 'node', 'title', 'class' (and 'input'); "
            f"got keys {preview(sorted(map(str, raw)))}"
        )
    key = chosen[0]
    value, input_name = raw[key], raw.get("input")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidInputError(f"{where}: '{key}' must be text, got {preview(value)}")
    if not isinstance(input_name, str) or not input_name:
        raise InvalidInputError(f"{where}: 'input' must be a non-empty input name, got {preview(input_name)}")
    return Target(_SHORTHAND_SELECTORS[key], str(value), input_name, bool(raw.get("all", False)))


def _parse_shorthand(raw: str, where: str) -> Target:
    kind, sep, rest = raw.partition(":")
    name, dot, input_name = rest.rpartition(".")
    if not sep or kind not in _SHORTHAND_SELECTORS or not dot or not name or not input_name:
        raise InvalidInputError(
            f"{where}: {preview(raw)} is not 'id:<node>.<input>', 'title:<title>.<input>' or 'class:<class>.<input>'"
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
            raise InvalidInputError(f"field {preview(name)}: empty target list")
        mapping[str(name)] = [parse_target(t, f"field {preview(name)}") for t in targets]
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
    return sorted((nid for nid, n in workflow.items() if n.get("class_type") == class_type), key=node_id_key)


def resolve_target(workflow: Mapping[str, Any], target: Target) -> tuple[list[str], str | None]:
    """Node ids a target selects, or an explanation why it selects none/too many."""
    if target.selector == "node":
        return ([target.value], None) if target.value in workflow else ([], f"no node with id {target.value!r}")
    if target.selector == "title":
        ids = sorted((nid for nid, n in workflow.items() if node_title(n) == target.value), key=node_id_key)
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


def node_id_key(nid: str) -> tuple[int, str]:
    return (int(nid), nid) if nid.isdigit() else (1 << 62, nid)
