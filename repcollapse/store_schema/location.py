"""Where a store lives: local path or fsspec URL, and its root or a sub-group opened.

A leaf module (``store.py`` and ``creation.py`` both need it, and ``store.py`` calls creation:
kept apart, neither imports the other back)."""

from __future__ import annotations

from pathlib import Path

import zarr


def is_local(url: str | Path) -> bool:
    s = str(url)
    return "://" not in s or s.startswith("file://")


def local_path(url: str | Path) -> Path:
    s = str(url)
    return Path(s[len("file://") :] if s.startswith("file://") else s)


def open_group(url: str | Path, group: str | None, mode: str) -> zarr.Group:
    """The group as it is now: never through the consolidated metadata in the root's
    ``zarr.json``, which a killed writer may leave one step behind (docs/store.md)."""
    root = zarr.open_group(store=str(url), mode=mode, zarr_format=3, use_consolidated=False)
    if group:
        return root[group] if mode == "r" else root.require_group(group)
    return root
