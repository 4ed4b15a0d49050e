"""Checks ``extract`` runs before it writes anything: the store path and reused checkpoint names.

A store path must be absent, an empty directory or a Zarr store, and writable (the store and
its lock file beside it): an existing directory of other files is refused untouched, so a
mistyped ``--store`` never fills a results folder with arrays.

A checkpoint name already complete in the store is skipped only if its weights are the ones
that were extracted under that name: each extraction records the sha256 of the weight files
(model shards, then every adapter merged or read, in order) in the store's ``extraction_log``,
and a name that comes back with other weights (a retrained stage written to the old name) is
refused rather than silently skipped. Stores written before the hash was recorded fall back to
the stored ``manifest_json``: a retrained checkpoint has a new manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from repcollapse.extract.checkpoints import CheckpointSource
from repcollapse.store_schema.problems import Problem, SchemaError
from repcollapse.store_schema.problems import UsageError as UsageError  # re-exported
from repcollapse.store_schema.schema import STORE_KIND


def _local(store: str | Path) -> Path | None:
    s = str(store)
    if s.startswith("file://"):
        return Path(s[len("file://") :])
    return None if "://" in s else Path(s)


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _store_kind(zarr_json: Path) -> object:
    """The root group's store_kind; None where it has no attributes at all, which may be a
    killed creation of an older version that store creation rebuilds (or refuses) itself."""
    try:
        attrs = json.loads(zarr_json.read_text(encoding="utf-8")).get("attributes") or {}
    except (OSError, ValueError, AttributeError):
        return None
    return attrs.get("store_kind", "") if attrs else None


def check_store_path(store: str | Path) -> None:
    """Refuse a local store path that is a file, a non-Zarr directory or not writable."""
    path = _local(store)
    if path is None:
        return  # fsspec URLs: the filesystem reports its own errors
    problem = None
    if path.exists() and not path.is_dir():
        problem = Problem(
            str(path),
            "expected a Zarr store directory (or a path to create one), found a file",
            "not_a_store",
        )
    elif path.is_dir() and not (path / "zarr.json").is_file() and any(path.iterdir()):
        first = sorted(p.name for p in path.iterdir())[0]
        problem = Problem(
            str(path),
            f"expected a Zarr store (zarr.json) or an empty directory, found a directory of other "
            f"files (e.g. {first!r}): it is not a Zarr store, and nothing is written into it",
            "not_a_store",
        )
    elif (path / "zarr.json").is_file() and _store_kind(path / "zarr.json") not in (
        STORE_KIND,
        None,
    ):
        problem = Problem(
            f"{path} attrs.store_kind",
            f"expected {STORE_KIND!r}, found {_store_kind(path / 'zarr.json')!r}: another tool's "
            "Zarr store, and nothing is written into it",
            "not_a_store",
        )
    else:
        # The store itself (or the directory it will be made in), then where its lock file goes.
        for folder in (_nearest_existing(path), _nearest_existing(path.absolute().parent)):
            if not os.access(folder, os.W_OK | os.X_OK):
                problem = Problem(
                    str(folder),
                    "expected a writable directory (for the store and its lock file beside it), "
                    "found it not writable",
                    "not_writable",
                )
                break
    if problem is not None:
        raise SchemaError([problem], f"refusing --store {store}")


def weight_files(src: CheckpointSource) -> list[Path]:
    """The files that determine a checkpoint's stored data: model shards, then adapters."""
    index = src.model_dir / "model.safetensors.index.json"
    if (src.model_dir / "model.safetensors").is_file() or not index.is_file():
        files = [src.model_dir / "model.safetensors"]
    else:
        shards = json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()
        files = [src.model_dir / s for s in sorted(set(shards))]
    own = src.path / (src.manifest.adapter_dir or "adapter")
    adapters = list(src.adapters)
    if (own / "adapter_config.json").is_file() and own not in adapters:
        adapters.append(own)
    return files + [a / "adapter_model.safetensors" for a in adapters]


def weights_sha256(src: CheckpointSource) -> str:
    """One digest over every weight file's name and sha256, in order."""
    h = hashlib.sha256()
    for f in weight_files(src):
        with f.open("rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        h.update(f"{f.name}:{digest}\n".encode())
    return h.hexdigest()


def check_reused_names(store: str | Path, sources: Sequence[CheckpointSource]) -> dict[str, str]:
    """Refuse a checkpoint whose name is complete in ``store`` with other weights; returns the
    weight hashes computed (by name) so the run does not hash them again."""
    import zarr

    from repcollapse.store_schema.store import read_attrs, store_exists

    if not store_exists(store):
        return {}
    kind = read_attrs(store).get("store_kind")
    if kind != STORE_KIND:  # another tool's Zarr store: refused before any of it is read
        raise SchemaError(
            [
                Problem(
                    f"{store} attrs.store_kind",
                    f"expected {STORE_KIND!r}, found {kind!r}: not an activation store, and "
                    "nothing is written into it",
                    "not_a_store",
                )
            ]
        )
    g = zarr.open_group(store=str(store), mode="r", zarr_format=3, use_consolidated=False)
    names = [str(x) for x in g["name"][:]]
    complete = [bool(x) for x in g["complete"][:]]
    recorded: dict[str, str] = {}
    for entry in read_attrs(store).get("extraction_log", []):
        if isinstance(entry, dict) and entry.get("weights_sha256"):
            recorded[str(entry.get("checkpoint"))] = str(entry["weights_sha256"])
    hashes: dict[str, str] = {}
    problems: list[Problem] = []
    for src in sources:
        name = src.manifest.name
        if name not in names or not complete[names.index(name)]:
            continue
        hint = "give the new checkpoint its own name, or use a new store"
        if name in recorded:
            hashes[name] = ours = weights_sha256(src)
            if ours != recorded[name]:
                problems.append(
                    Problem(
                        str(src.path),
                        f"checkpoint {name!r} is complete in {store} with weights sha256 "
                        f"{recorded[name][:16]}..., expected the same weights, found sha256 "
                        f"{ours[:16]}...: {hint}",
                        "reused_name",
                    )
                )
        elif str(g["manifest_json"][names.index(name)]) != src.manifest_json:
            problems.append(
                Problem(
                    str(src.path / "manifest.json"),
                    f"checkpoint {name!r} is complete in {store} with another manifest (and no "
                    f"weights sha256 recorded), expected the same checkpoint: {hint}",
                    "reused_name",
                )
            )
    if problems:
        raise SchemaError(problems, f"refusing to skip checkpoints complete in {store}")
    return hashes
