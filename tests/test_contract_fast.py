"""The compiled contract check (``_fast_contract``) never accepts a document that jsonschema rejects.

Every leaf and object of a real marker, scene telemetry and run metadata document is
replaced by values of every JSON type (and edge values: 3.0 for an integer, a trailing
newline after a pattern's ``$``, bool for a number) or deleted, and unknown keys are
added; for each variant the fast check's answer is compared with jsonschema's.
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from run_factory import Run, make_run
from scene_telemetry.telemetry import ContractError, _fast_contract, contract_errors, validate_document
from scene_telemetry.telemetry._contract import DOCUMENT_KINDS, DocumentKind, bundled_schema, validator_for
from scene_telemetry.telemetry._fast_contract import compiled_check, fast_accepts, unshared_keywords
from scene_telemetry.telemetry._validate import contract_rows

REPLACEMENTS: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1,
    3.0,
    2.5,
    2**70,
    "",
    "x",
    "s01\n",
    "2026-01-01T00:00:00Z\n",
    "2026-01-01T00:00:00+01:00",
    [],
    [None],
    {},
    {"Unknown": 1},
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return make_run(tmp_path_factory.mktemp("fast") / "output")


def documents(run: Run) -> dict[DocumentKind, Any]:
    metadata = run.metadata()
    return {"done-marker": run.marker["body"], "scene-telemetry": metadata["Scenes"][0], "artifact-metadata": metadata}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into a JSON value (objects, arrays and leaves), the root excluded."""
    children: Any = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


def _variants(document: Any) -> Iterator[Any]:
    for path in list(_paths(document)):
        for replacement in (*REPLACEMENTS, _DELETE):
            variant = copy.deepcopy(document)
            parent = variant
            for key in path[:-1]:
                parent = parent[key]
            if replacement is _DELETE:
                del parent[path[-1]]
            else:
                parent[path[-1]] = copy.deepcopy(replacement)
            yield variant
        target = document
        for key in path:
            target = target[key]
        if isinstance(target, dict):
            variant = copy.deepcopy(document)
            parent = variant
            for key in path:
                parent = parent[key]
            parent["NotInTheContract"] = 1
            yield variant


_DELETE = object()


@pytest.mark.parametrize("kind", DOCUMENT_KINDS)
def test_the_bundled_schemas_compile_to_a_fast_check(kind: DocumentKind) -> None:
    """The fast path is on for every kind: its keywords mean the same in draft-07 and 2020-12."""
    assert unshared_keywords(bundled_schema(kind)) == set()
    assert compiled_check(kind) is not None


@pytest.mark.parametrize("kind", DOCUMENT_KINDS)
def test_the_fast_check_never_accepts_what_jsonschema_rejects(run: Run, kind: DocumentKind) -> None:
    document = documents(run)[kind]
    assert fast_accepts(document, kind)
    reference = validator_for(kind)
    checked = rejected = agreed = 0
    for variant in _variants(document):
        valid = reference.is_valid(variant)
        fast = fast_accepts(variant, kind)
        assert not (fast and not valid), f"fast path accepted an invalid {kind}: {list(reference.iter_errors(variant))}"
        checked += 1
        rejected += not valid
        agreed += fast == valid
    assert checked > 200 and rejected > checked // 3
    assert agreed >= checked * 0.9  # the fast path is worth having: it accepts most valid variants


def test_a_document_only_the_fast_check_rejects_is_valid(run: Run) -> None:
    """jsonschema's ``$`` matches before a final newline, the compiled check's does not: jsonschema's verdict stands."""
    metadata = run.metadata()
    metadata["CreatedAt"] += "\n"
    assert not fast_accepts(metadata, "artifact-metadata")
    assert validator_for("artifact-metadata").is_valid(metadata)
    rows = contract_rows(metadata, "artifact-metadata", "m.json")
    assert [(r.check, r.verdict) for r in rows] == [("contract", "pass")]
    assert contract_errors(metadata, "artifact-metadata") == []
    validate_document(metadata, "artifact-metadata")


def test_rows_for_a_bad_document_are_jsonschemas(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    metadata = run.metadata()
    metadata["Scenes"][0]["GPU"]["VramAfterMB"] = -1
    metadata["Scenes"][0]["Frames"]["Extra"] = True
    with_fast = contract_rows(metadata, "artifact-metadata", "m.json")
    monkeypatch.setattr(_fast_contract, "compiled_check", lambda kind: None)
    assert contract_rows(metadata, "artifact-metadata", "m.json") == with_fast
    assert {(r.check, r.field) for r in with_fast} == {
        ("contract", "Scenes[0].GPU.VramAfterMB"),
        ("unknown-field", "Scenes[0].Frames.Extra"),
    }
    with pytest.raises(ContractError, match=r"\(.Extra. was unexpected\)"):
        validate_document(metadata, "artifact-metadata")


def test_without_fastjsonschema_jsonschema_decides_alone(
    run: Run, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A ComfyUI install updated without its requirements still validates (slower)."""
    monkeypatch.setitem(sys.modules, "fastjsonschema", None)
    compiled_check.cache_clear()
    try:
        with caplog.at_level(logging.DEBUG, logger=_fast_contract.__name__):
            assert compiled_check("done-marker") is None
        assert "fastjsonschema is not installed" in caplog.text
        assert not fast_accepts(run.marker["body"], "done-marker")
        assert contract_errors(run.marker["body"], "done-marker") == []
    finally:
        compiled_check.cache_clear()


@pytest.mark.parametrize(
    ("schema", "unshared"),
    [
        ({"type": "object", "properties": {"items": {"type": "string"}, "format": {}}}, set()),
        ({"prefixItems": [{"type": "string"}]}, {"prefixItems"}),
        ({"items": [{"type": "string"}]}, {"items (array form)"}),
        ({"properties": {"A": {"unevaluatedProperties": False}}}, {"unevaluatedProperties"}),
        ({"enum": [{"dependentRequired": 1}], "const": {"$ref": "x"}}, set()),
    ],
)
def test_a_keyword_whose_meaning_changed_turns_the_fast_path_off(schema: Any, unshared: set[str]) -> None:
    assert unshared_keywords(schema) == unshared


def test_a_const_is_compiled_as_a_one_value_enum() -> None:
    converted = _fast_contract._const_as_enum({"properties": {"const": {"const": 1}}, "enum": ["const"]})
    assert converted == {"properties": {"const": {"enum": [1]}}, "enum": ["const"]}


def test_paths_cover_nested_arrays() -> None:
    assert list(_paths({"a": [{"b": 1}]})) == [("a",), ("a", 0), ("a", 0, "b")]
