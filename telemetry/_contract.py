"""Telemetry contract v1: loading the JSON Schemas and validating documents.

The schemas live in ``telemetry/schemas/*.json`` (draft 2020-12) and are package
data. Validators are compiled once per process; ``$ref`` between the files is
resolved through a :class:`referencing.Registry`.
"""

from __future__ import annotations

import json
from functools import cache, lru_cache
from importlib import resources
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

from ._errors import ContractError

SCHEMA_VERSION = "scene-telemetry/1"
"""Value of ``SchemaVersion`` in every v1 document."""

DocumentKind = Literal["done-marker", "scene-telemetry", "artifact-metadata"]
DOCUMENT_KINDS: tuple[DocumentKind, ...] = ("done-marker", "scene-telemetry", "artifact-metadata")
SCHEMA_FILES: tuple[str, ...] = ("common", *DOCUMENT_KINDS)


def load_schema(name: str) -> dict[str, Any]:
    """Return the parsed schema ``telemetry/schemas/<name>.json``."""
    text = resources.files(__package__).joinpath("schemas").joinpath(f"{name}.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@lru_cache(maxsize=1)
def _registry() -> Registry:  # type: ignore[type-arg,unused-ignore]
    resources_ = [(load_schema(n)["$id"], Resource.from_contents(load_schema(n))) for n in SCHEMA_FILES]
    return Registry().with_resources(resources_)


@cache
def validator_for(kind: DocumentKind) -> Draft202012Validator:
    """Return the compiled validator of one document kind (cached)."""
    if kind not in DOCUMENT_KINDS:
        raise ValueError(f"unknown document kind {kind!r}")
    return Draft202012Validator(load_schema(kind), registry=_registry())


def contract_errors(document: Any, kind: DocumentKind) -> list[str]:
    """Return every contract violation of *document* as 'path: message' lines."""
    errors = sorted(validator_for(kind).iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{_json_path(e.absolute_path)}: {e.message}" for e in errors]


def validate_document(document: Any, kind: DocumentKind, *, path: str | None = None) -> None:
    """Raise :class:`ContractError` (best match first) unless *document* is valid."""
    error = best_match(validator_for(kind).iter_errors(document))
    if error is not None:
        field = _json_path(error.absolute_path)
        raise ContractError(f"{kind} document violates contract v1: {error.message}", path=path, field=field)


def _json_path(parts: Any) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
    return text.lstrip(".") or "<root>"
