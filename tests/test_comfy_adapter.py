"""nodes/_comfy.py: what the adapters report when ComfyUI's modules are there, partial, or absent."""

from __future__ import annotations

import sys
import types

import pytest
from scene_telemetry.nodes import _comfy


def test_comfyui_version_from_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("comfyui_version")
    module.__version__ = "0.8.0"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfyui_version", module)
    assert _comfy.comfyui_version() == "0.8.0"


def test_comfyui_version_without_a_version_is_null_not_the_text_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "comfyui_version", types.ModuleType("comfyui_version"))
    assert _comfy.comfyui_version() is None


def test_comfyui_version_outside_comfyui(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "comfyui_version", None)  # import raises ImportError
    assert _comfy.comfyui_version() is None
