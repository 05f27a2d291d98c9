"""The contract's fast path: a compiled yes/no check that answers before jsonschema is asked.

jsonschema spends ≈0.5 ms on a one-scene metadata document; a validator that is
compiled to Python code (``fastjsonschema``) from the same bundled schema answers
in ≈0.04 ms. The compiled check only ever *accepts*: a document it does not accept
(or any exception inside it) goes to jsonschema, whose verdict and error report
are the contract's (``_contract.validator_for``). So the fast path can make a
valid document cheaper but never changes what is reported for a bad one, and a
document it wrongly rejects (a timestamp followed by a newline, which jsonschema's
``re.search`` lets a pattern's ``$`` match) costs only the jsonschema run.

The bundled schemas are draft 2020-12; fastjsonschema compiles draft-07. The two
drafts mean the same for every keyword in :data:`SHARED_KEYWORDS` (``items`` only
in its one-schema form), so the bundle is compiled as draft-07 when it uses no
other keyword, and the fast path is switched off (jsonschema alone) when it does.
``format`` is an annotation in both (jsonschema without a format checker, and
``use_formats=False`` here).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._contract import DocumentKind

logger = logging.getLogger(__name__)

Check = Callable[[Any], Any]

SHARED_KEYWORDS: frozenset[str] = frozenset(
    {
        "additionalProperties",
        "allOf",
        "anyOf",
        "const",
        "enum",
        "exclusiveMaximum",
        "exclusiveMinimum",
        "format",
        "items",
        "maxItems",
        "maxLength",
        "maximum",
        "minItems",
        "minLength",
        "minimum",
        "not",
        "oneOf",
        "pattern",
        "properties",
        "required",
        "type",
    }
)
"""Keywords with the same meaning in draft-07 and draft 2020-12 (numeric ``exclusiveMinimum`` since draft 6)."""

_DRAFT_07 = "http://json-schema.org/draft-07/schema#"
_VALUES = frozenset({"const", "enum"})
"""Keywords whose value is JSON data, not a schema: never walked as one."""


def unshared_keywords(node: Any, *, in_names: bool = False) -> set[str]:
    """Keywords of a bundled schema whose draft-07 meaning differs (or is unknown); empty when it compiles as is."""
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= unshared_keywords(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if in_names:
                found |= unshared_keywords(value)
                continue
            if key not in SHARED_KEYWORDS or (key == "items" and not isinstance(value, dict)):
                found.add("items (array form)" if key == "items" else key)
            if key not in _VALUES:
                found |= unshared_keywords(value, in_names=key == "properties")
    return found


def _const_as_enum(node: Any, *, in_names: bool = False) -> Any:
    """``{"const": x}`` as ``{"enum": [x]}`` (the same assertion).

    fastjsonschema 2.22 cannot compile ``const`` without detailed exceptions, and
    detailed exceptions double the generated code (and its compile time).
    """
    if isinstance(node, list):
        return [_const_as_enum(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted: dict[str, Any] = {}
    for key, value in node.items():
        if in_names:
            converted[key] = _const_as_enum(value)
        elif key == "const" and "enum" not in node:
            converted["enum"] = [value]
        elif key in _VALUES:
            converted[key] = value
        else:
            converted[key] = _const_as_enum(value, in_names=key == "properties")
    return converted


@cache
def compiled_check(kind: DocumentKind) -> Check | None:
    """The compiled check of *kind* (built on first use, once per process); None: jsonschema decides alone."""
    from ._contract import bundled_schema

    schema = bundled_schema(kind)
    unshared = unshared_keywords(schema)
    if unshared:
        logger.debug("contract fast path off for %s: keyword(s) %s differ in draft-07", kind, sorted(unshared))
        return None
    try:
        import fastjsonschema
    except ImportError:
        logger.debug("contract fast path off: fastjsonschema is not installed")
        return None
    draft07 = {**_const_as_enum(schema), "$schema": _DRAFT_07}
    try:
        check: Check = fastjsonschema.compile(draft07, use_default=False, use_formats=False, detailed_exceptions=False)
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        logger.debug("contract fast path off for %s: %s", kind, exc)
        return None
    return check


def fast_accepts(document: Any, kind: DocumentKind) -> bool:
    """True when the compiled check accepts *document*; False means: ask jsonschema (``validator_for``)."""
    check = compiled_check(kind)
    if check is None:
        return False
    try:
        check(document)
    except Exception:  # noqa: BLE001 - any refusal or failure of the fast path defers to the reference validator
        return False
    return True
