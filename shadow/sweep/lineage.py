"""Where a candidate came from: library versions and the code's git commit."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

_LIBRARIES = ("shadow-sweep", "torch", "onnx", "onnxruntime", "ray", "numpy", "pandas")


@functools.cache
def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a model's numbers, plus Python's."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@functools.cache
def git_commit() -> dict[str, Any] | None:
    """The commit of the source tree shadow runs from, if it is a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)} if commit else None


def code_lineage() -> dict[str, Any]:
    """Versions and git state, computed once in the driver and shared with workers."""
    return {"versions": library_versions(), "git": git_commit()}
