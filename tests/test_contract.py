"""Contract v1: schemas are valid, self-consistent, documented, and what we emit validates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jsonschema import Draft202012Validator
from scene_telemetry.telemetry import (
    SCHEMA_VERSION,
    ContractError,
    SceneContext,
    contract_errors,
    load_schema,
    validate_document,
    write_frames_with_marker,
)
from scene_telemetry.telemetry._contract import SCHEMA_FILES
from scene_telemetry.telemetry._contract_doc import embedded_table, render_field_table

REPO = Path(__file__).resolve().parents[1]
SEED_FIELDS = (
    "DurationSeconds QueueStart QueueEnd HistoryAttempts HistoryAttemptLimit HistoryExitReason PollLimit "
    "MaxWaitSeconds PollIntervalSeconds ExecutionSuccessDetected ExecutionSuccessAt PostExecutionTimeoutSeconds "
    "HistoryPostExecutionTimeoutReached SceneRetryBudget GPU.Name GPU.Type GPU.Index GPU.VramTotal "
    "GPU.VramBeforeMB GPU.VramAfterMB GPU.VramDeltaMB GPU.VramFreeBefore GPU.VramFreeAfter System.FallbackNotes "
    "System.Before System.After DoneMarkerDetected DoneMarkerWaitSeconds ForcedCopyTriggered"
).split()


def _walk_properties(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        for name, prop in node.get("properties", {}).items():
            found.append((f"{path}{name}", prop))
        for key, value in node.items():
            if key != "properties":
                found += _walk_properties(value, path)
        for name, prop in node.get("properties", {}).items():
            found += _walk_properties(prop, f"{path}{name}.")
    elif isinstance(node, list):
        for item in node:
            found += _walk_properties(item, path)
    return found


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_checks_itself(name: str) -> None:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/{name}.json")


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_every_property_is_described_and_attributed(name: str) -> None:
    for path, prop in _walk_properties(load_schema(name)):
        assert prop.get("description"), f"{name}: {path} has no description"
        assert prop.get("x-writer"), f"{name}: {path} does not say who writes it (x-writer)"


def test_version_constant_matches_schemas() -> None:
    assert load_schema("common")["$defs"]["SchemaVersion"]["const"] == SCHEMA_VERSION
    for kind in ("done-marker", "scene-telemetry", "artifact-metadata"):
        assert load_schema(kind)["properties"]["SchemaVersion"]["$ref"].endswith("SchemaVersion")
        assert load_schema(kind)["properties"]["Document"]["const"] == kind


def test_seed_field_names_are_in_the_scene_schema() -> None:
    scene = load_schema("scene-telemetry")["properties"]
    defs = load_schema("common")["$defs"]
    for field in SEED_FIELDS:
        if "." in field:
            group, name = field.split(".")
            assert name in defs[group]["properties"], field
        else:
            assert field in scene, field


def test_nullable_fields_say_when() -> None:
    for name in SCHEMA_FILES:
        for path, prop in _walk_properties(load_schema(name)):
            types = prop.get("type")
            if isinstance(types, list) and "null" in types:
                assert prop.get("x-null-when"), f"{name}: {path} is nullable but does not say when"


def test_document_matches_schemas() -> None:
    text = (REPO / "TELEMETRY_CONTRACT.md").read_text(encoding="utf-8")
    assert embedded_table(text) == render_field_table(), (
        "TELEMETRY_CONTRACT.md is out of date: regenerate with `scene-telemetry contract --markdown`"
    )


def test_emitted_marker_validates(output_dir: Path) -> None:
    images = np.zeros((2, 4, 4, 3), dtype=np.float32)
    result = write_frames_with_marker(images, output_dir, "f", context=SceneContext(prompt_id="p", scene_id="s"))
    body = json.loads(result.marker_path.read_text())
    assert contract_errors(body, "done-marker") == []
    assert body["SchemaVersion"] == SCHEMA_VERSION


def test_invalid_document_names_the_field() -> None:
    with pytest.raises(ContractError) as info:
        validate_document({"SchemaVersion": SCHEMA_VERSION, "Document": "done-marker"}, "done-marker", path="x.done")
    assert info.value.path == "x.done"
    assert "required" in str(info.value)


def test_wrong_types_are_reported_per_field(output_dir: Path) -> None:
    images = np.zeros((1, 4, 4, 3), dtype=np.float32)
    body = json.loads(write_frames_with_marker(images, output_dir, "f").marker_path.read_text())
    body["FrameCount"] = "one"
    body["Files"][0]["Name"] = "../escape.png"
    body["Unexpected"] = 1
    problems = contract_errors(body, "done-marker")
    assert any(p.startswith("FrameCount:") for p in problems)
    assert any(p.startswith("Files[0].Name:") for p in problems)
    assert any("Unexpected" in p for p in problems)
