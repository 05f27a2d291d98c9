"""Telemetry contract v1: loading the JSON Schemas and validating documents.

The schemas live in ``telemetry/schemas/*.json`` (draft 2020-12) and are package
data. Every check of a document against the contract goes through
:func:`validator_for`, which compiles a bundled copy of the kind's schema once
per process: each ``$ref`` between the files inlined and the annotation keywords
dropped. Batch validation otherwise spends its time in ``$ref`` lookups and in
skipping annotations; the bundle gives the same errors, messages and instance
paths as the schemas resolved through a ``referencing.Registry``
(tests/test_contract.py compares the two).

A compiled check of the same bundle (``_fast_contract``) answers first; jsonschema
runs only for a document it does not accept, so a valid document costs ≈0.04 ms
instead of ≈0.5 ms and jsonschema is not even imported while every document is valid.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ._errors import ContractError
from ._fast_contract import fast_accepts

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

SCHEMA_VERSION = "scene-telemetry/1"
"""Value of ``SchemaVersion`` in every v1 document."""
CONTRACT_VERSION = "1.1"
"""Minor version of contract v1 (``x-contract-version`` of common.json). A minor version only adds optional
fields or enum values, so every older v1 document still validates; SchemaVersion stays ``scene-telemetry/1``."""

DocumentKind = Literal["done-marker", "scene-telemetry", "artifact-metadata"]
DOCUMENT_KINDS: tuple[DocumentKind, ...] = ("done-marker", "scene-telemetry", "artifact-metadata")
SCHEMA_FILES: tuple[str, ...] = ("common", *DOCUMENT_KINDS)

ANNOTATIONS: frozenset[str] = frozenset({"title", "description", "x-writer", "x-unit", "x-null-when"})
"""Keywords that never affect validity; dropped from the bundled schemas."""
_SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
_NOT_BUNDLED: frozenset[str] = ANNOTATIONS | {"$defs", "$id", "$schema"}
"""Keywords a bundled (ref-free, single-file) schema has no use for."""


def load_schema(name: str) -> dict[str, Any]:
    """Return the parsed schema ``telemetry/schemas/<name>.json``.

    Read beside this module (the pack and the pip package both ship the folder as plain files); importlib.resources
    would cost the start-up of ``validate`` and ``wait`` a few milliseconds of imports for nothing.
    """
    text = (_SCHEMA_DIR / f"{name}.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def bundled_schema(kind: DocumentKind) -> dict[str, Any]:
    """The schema of *kind* with every ``$ref`` inlined and annotations dropped (what :func:`validator_for` runs)."""
    if kind not in DOCUMENT_KINDS:
        raise ValueError(f"unknown document kind {kind!r}")
    schemas = {name: load_schema(name) for name in SCHEMA_FILES}
    bundled: dict[str, Any] = _inline(schemas[kind], kind, schemas, in_names=False)
    return bundled


def _inline(node: Any, base: str, schemas: dict[str, Any], *, in_names: bool) -> Any:
    """Copy *node* (a part of schema file *base*) with refs replaced by their targets.

    *in_names* is true for the values of ``properties``/``$defs``: their keys are
    field names, not keywords, so a field called ``description`` is kept.
    """
    if isinstance(node, list):
        return [_inline(item, base, schemas, in_names=False) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        file, _, fragment = str(node["$ref"]).partition("#")
        name = file.removesuffix(".json") or base
        target: Any = schemas[name]
        for part in (p for p in fragment.split("/") if p):
            target = target[part]
        merged = _inline(target, name, schemas, in_names=False)
        extra = _inline(
            {k: v for k, v in node.items() if k != "$ref" and k not in ANNOTATIONS}, base, schemas, in_names=False
        )
        clash = sorted(set(merged) & set(extra))
        if clash:  # a sibling would replace the target's keyword instead of adding to it
            raise ValueError(f"{base}.json: $ref {node['$ref']} has sibling keyword(s) {clash} its target also has")
        return {**merged, **extra}
    return {
        key: _inline(value, base, schemas, in_names=key in ("properties", "$defs"))
        for key, value in node.items()
        if in_names or key not in _NOT_BUNDLED
    }


@cache
def validator_for(kind: DocumentKind) -> Draft202012Validator:
    """Return the compiled validator of one document kind (its bundled schema, compiled once per process)."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(bundled_schema(kind))


def contract_errors(document: Any, kind: DocumentKind) -> list[str]:
    """Return every contract violation of *document* as 'path: message' lines."""
    if fast_accepts(document, kind):
        return []
    errors = sorted(validator_for(kind).iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{json_path(e.absolute_path)}: {e.message}" for e in errors]


def validate_document(document: Any, kind: DocumentKind, *, path: str | None = None) -> None:
    """Raise :class:`ContractError` (best match first) unless *document* is valid."""
    if fast_accepts(document, kind):
        return
    from jsonschema.exceptions import best_match

    error = best_match(validator_for(kind).iter_errors(document))
    if error is not None:
        field = json_path(error.absolute_path)
        raise ContractError(f"{kind} document violates contract v1: {error.message}", path=path, field=field)


def json_path(parts: Any) -> str:
    """A JSON instance path as shown in errors and reports: ``Scenes[0].GPU`` (``<root>`` when empty)."""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
    return text.lstrip(".") or "<root>"
