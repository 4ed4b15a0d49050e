"""The version of the code that produced a result: recorded in stores and in analysis tables."""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path


def code_version() -> str:
    """Package version plus the git short hash of the source tree when there is one."""
    try:
        version = importlib.metadata.version("repcollapse")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{version}+g{sha}" if sha else version
