"""Render the contract's field tables for TELEMETRY_CONTRACT.md from the schemas.

The schemas are the single source of truth; the document embeds this rendering
between ``<!-- fields:begin -->`` and ``<!-- fields:end -->`` and a test fails
when the two disagree. Regenerate with ``scene-telemetry contract --markdown``.
"""

from __future__ import annotations

from typing import Any

from ._contract import DOCUMENT_KINDS, load_schema

BEGIN = "<!-- fields:begin -->"
END = "<!-- fields:end -->"
_OBJECT_DEFS = ("Versions", "File", "GPU", "Device", "System", "RamSample", "Frames", "FarmServer")


def _type_text(prop: dict[str, Any]) -> str:
    if "const" in prop:
        return f"`{prop['const']}`"
    if "$ref" in prop:
        return f"→ {prop['$ref'].rsplit('/', 1)[-1].removesuffix('.json')}"
    if "oneOf" in prop:
        return " | ".join(_type_text(p) for p in prop["oneOf"])
    kinds = prop.get("type", "any")
    text = " | ".join(kinds) if isinstance(kinds, list) else str(kinds)
    if "enum" in prop:
        values = ", ".join("null" if v is None else str(v) for v in prop["enum"])
        text += f" ({values})"
    if kinds == "array" and "items" in prop:
        text += f" of {_type_text(prop['items'])}"
    return text


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def _table(properties: dict[str, Any], prefix: str = "") -> list[str]:
    rows = [
        "| Field | Type | Unit | Written by | Null when | Meaning |",
        "|---|---|---|---|---|---|",
    ]
    for name, prop in properties.items():
        rows.append(
            f"| `{prefix}{name}` | {_cell(_type_text(prop))} | {_cell(prop.get('x-unit'))} | "
            f"{_cell(prop.get('x-writer'))} | {_cell(prop.get('x-null-when'))} | {_cell(prop.get('description'))} |"
        )
    return rows


def render_field_table() -> str:
    """Markdown tables of every document and shared object, in a stable order."""
    lines = [BEGIN, ""]
    for kind in DOCUMENT_KINDS:
        schema = load_schema(kind)
        lines += [f"### Document `{kind}`", "", _cell(schema["description"]), ""]
        lines += _table(schema["properties"]) + [""]
    defs = load_schema("common")["$defs"]
    for name in _OBJECT_DEFS:
        lines += [f"### Object `{name}`", "", _cell(defs[name]["description"]), ""]
        lines += _table(defs[name]["properties"], prefix=f"{name}.") + [""]
    lines.append(END)
    return "\n".join(lines)


def embedded_table(document_text: str) -> str | None:
    """The block between the markers in TELEMETRY_CONTRACT.md, markers included."""
    start = document_text.find(BEGIN)
    end = document_text.find(END)
    if start < 0 or end < 0:
        return None
    return document_text[start : end + len(END)]
