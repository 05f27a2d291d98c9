"""Shared fixtures.

Every fixture here exists for a reason stated in its docstring; keep them small.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from comfy_server import ComfyServer, start_server, stop_server

REPO_ROOT = Path(__file__).resolve().parents[1]
RECORDED_DIR = REPO_ROOT / "tests" / "data" / "comfyui-0.8.0"
_THREAD_GRACE_S = 2.0


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """Fail a test that leaves threads running (observers, pools, servers must be joined)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + _THREAD_GRACE_S
    leaked: list[threading.Thread] = []
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked:
            return
        time.sleep(0.02)
    pytest.fail(f"test leaked threads: {[t.name for t in leaked]}")


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    """A stand-in for ComfyUI's output directory (absolute, empty)."""
    out = tmp_path / "output"
    out.mkdir()
    return out


@pytest.fixture
def recorded_dir() -> Path:
    """Recorded replies of a real ComfyUI 0.8.0 server (transcripts, object_info); see its README."""
    return RECORDED_DIR


@pytest.fixture(scope="session")
def comfy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    """One real ComfyUI (``main.py --cpu``) with this pack for the whole e2e tier; startup takes seconds."""
    server = start_server(tmp_path_factory.mktemp("comfy"))
    yield server
    stop_server(server)
