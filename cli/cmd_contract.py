"""``scene-telemetry contract``: print the contract's schemas or its field tables."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..telemetry import SCHEMA_FILES, load_schema, render_field_table
from ._console import emit


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("contract", help="print telemetry contract v1 (schemas or field tables)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--markdown", action="store_true", help="field tables as embedded in TELEMETRY_CONTRACT.md")
    group.add_argument("--schema", choices=SCHEMA_FILES, help="print one JSON Schema")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.schema:
        emit(json.dumps(load_schema(args.schema), indent=2, ensure_ascii=False))
    else:
        emit(render_field_table())
    return 0
