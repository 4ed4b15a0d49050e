"""Atomic store creation: a store (or a sub-store group) either exists with its attributes or
not at all, whatever moment a creation is killed at.

Local stores are built under a temporary name beside the root store
(``.<root name>.creating-<random>``) and renamed into place, one ``rename`` at the end. A kill
before it leaves only that temporary directory, which the next creation removes (it holds the
store lock, so no other creation of this store is running). Remote (fsspec) stores have no
rename: the group's attributes are written last, and a group without attributes holding only
store arrays (``protocol.looks_unfinished``) is a killed creation that the next one rebuilds.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import zarr

from repcollapse.store_schema.location import is_local as _is_local
from repcollapse.store_schema.location import local_path as _local_path
from repcollapse.store_schema.location import open_group as _open_group
from repcollapse.store_schema.protocol import looks_unfinished, protocol_step

_BUILD_MARK = ".creating-"


def _where(url: str | Path, group: str | None) -> str:
    return f"{url}{'/' + group if group else ''}"


def creation_state(url: str | Path, group: str | None) -> str:
    """'absent', 'created', 'unfinished' (a killed creation's leftovers) or 'foreign'."""
    try:
        g = _open_group(url, group, "r")
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        if _is_local(url):
            path = _local_path(url) / (group or "")
            if path.exists() and (not path.is_dir() or any(path.iterdir())):
                return "foreign"
        return "absent"
    if "schema_version" in g.attrs:
        return "created"
    return "unfinished" if looks_unfinished(g) else "foreign"


def refuse_existing(url: str | Path, group: str | None, state: str) -> None:
    if state == "created":
        raise FileExistsError(f"a store already exists at {_where(url, group)}; open it instead")
    if state == "foreign":
        raise FileExistsError(
            f"{_where(url, group)}: expected no file there or a repcollapse store, found other "
            f"data (no attrs.schema_version); refusing to overwrite it, choose another path"
        )


def _remove_stale_builds(root: Path) -> None:
    """Temporary directories of killed creations of this store (the caller holds its lock)."""
    if not root.parent.is_dir():
        return
    for path in root.parent.glob(f".{root.name}{_BUILD_MARK}*"):
        shutil.rmtree(path, ignore_errors=True)


def begin_creation(
    url: str | Path, group: str | None
) -> tuple[str, str | None, Callable[[], None]]:
    """Where to build a new store and the step that publishes it: (url, group, finish).

    Raises FileExistsError for an existing store or foreign data. The caller holds the lock.
    """
    state = creation_state(url, group)
    refuse_existing(url, group, state)
    if not _is_local(url):
        if state == "unfinished":
            root = zarr.open_group(store=str(url), mode="r+", zarr_format=3, use_consolidated=False)
            if group:
                del root[group]
            else:
                root = zarr.open_group(store=str(url), mode="w", zarr_format=3)
        return str(url), group, lambda: None
    root = _local_path(url).absolute()
    _remove_stale_builds(root)
    build = root.with_name(f".{root.name}{_BUILD_MARK}{uuid.uuid4().hex}")
    final = root / group if group else root

    def finish() -> None:
        if group:  # the parent groups must exist for the sub-store to be readable
            parent = group.rsplit("/", 1)[0] if "/" in group else ""
            if parent:
                zarr.open_group(
                    store=str(root), mode="r+", zarr_format=3, use_consolidated=False
                ).require_group(parent)
        if state == "unfinished":  # an older version's killed creation, built in place
            shutil.rmtree(final)
        elif final.is_dir():  # empty (creation_state said so): rename replaces it
            final.rmdir()
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(build, final)
        protocol_step("create: renamed into place")

    return str(build), None, finish
