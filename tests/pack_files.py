"""The files the Comfy Registry archive would hold: tracked files minus .comfyignore."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def tracked_files() -> list[str]:
    """``git ls-files`` of the repository (the registry packs tracked files only)."""
    if not (REPO / ".git").exists():
        raise RuntimeError(f"{REPO} is not a git checkout: the registry archive is built from tracked files")
    out = subprocess.run(["git", "ls-files"], cwd=REPO, check=True, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if (REPO / line).exists()]


def comfyignore_patterns() -> list[str]:
    lines = (REPO / ".comfyignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        if pattern.endswith("/") and (path.startswith(pattern) or f"/{pattern}" in f"/{path}"):
            return True
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(Path(path).name, pattern):
            return True
    return False


def archive_files() -> list[str]:
    """Tracked files minus .comfyignore (directory patterns end with '/'), plus [tool.comfy] includes."""
    patterns = comfyignore_patterns()
    includes = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"].get("includes", [])
    return sorted({p for p in tracked_files() if not _ignored(p, patterns)} | set(includes))


def copy_pack(target: Path) -> Path:
    """Copy the archive's files into *target* (a custom_nodes/<folder> as ComfyUI-Manager would)."""
    for name in archive_files():
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, destination)
    return target
