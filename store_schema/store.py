"""Create, append to, and open activation stores (Zarr v3; local paths and fsspec URLs).

Writes go through zarr directly (so a checkpoint's region is written chunk-aligned and the
completion mark is one chunk of its own, written last); reads go through xarray. Several
processes may extract different checkpoints into one local store: the only shared step,
reserving a checkpoint slot (resizing the ``checkpoint`` dim), runs under a file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from store_schema import schema as S
from store_schema.checksums import ChecksumLog, slot_record
from store_schema.problems import Problem, SchemaError

_LOCAL_LOCK = threading.Lock()


@dataclass(frozen=True)
class StoreLayout:
    """Sizes fixed when a store is created."""

    n_layers: int
    """Hidden layers stored: embeddings + one per block."""
    n_features: int
    n_tokens: int
    vocab_size: int
    topk: int = 20
    n_blocks: int = 0
    lora_modules: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """module name -> (in_features, out_features)."""
    lora_rank_capacity: int = 64
    token_chunk: int = 4096

    def __post_init__(self) -> None:
        for name in ("n_layers", "n_features", "n_tokens", "vocab_size", "topk", "token_chunk"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"StoreLayout.{name}: expected a positive integer, found {value!r}"
                )
        if self.lora_modules and self.n_blocks < 1:
            raise ValueError(
                f"StoreLayout.n_blocks: expected >= 1 with LoRA modules, found {self.n_blocks}"
            )


_AUTO_ATTRS = {
    "schema_version",
    "store_kind",
    "store_id",
    "created_at",
    "token_chunk",
    "lora_modules",
}
"""Root attributes create_store sets itself (the caller need not pass them)."""


def _is_local(url: str | Path) -> bool:
    s = str(url)
    return "://" not in s or s.startswith("file://")


def _local_path(url: str | Path) -> Path:
    s = str(url)
    return Path(s[len("file://") :] if s.startswith("file://") else s)


@contextlib.contextmanager
def store_lock(url: str | Path) -> Iterator[None]:
    """Exclusive lock for the steps that change shared metadata (slot reservation)."""
    with _LOCAL_LOCK:
        if not _is_local(url):
            # fsspec stores have no portable lock: one writer process per remote store.
            yield
            return
        # Beside the store, not inside it: zarr warns about foreign objects in a hierarchy.
        store_path = _local_path(url).resolve()
        path = store_path.with_name(store_path.name + ".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _open_group(url: str | Path, group: str | None, mode: str) -> zarr.Group:
    root = zarr.open_group(store=str(url), mode=mode, zarr_format=3)
    if group:
        return root[group] if mode == "r" else root.require_group(group)
    return root


def _create(
    g: zarr.Group, spec: S.VariableSpec, shape: tuple[int, ...], chunks: tuple[int, ...], **kw: Any
) -> zarr.Array:
    dtype = str if spec.dtype == "str" else spec.dtype
    fill = kw.pop("fill_value", None)
    if fill is None:
        fill = "" if spec.dtype == "str" else (np.nan if spec.dtype.startswith("float") else 0)
    arr = g.create_array(
        spec.name,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        dimension_names=spec.dims,
        fill_value=fill,
        **kw,
    )
    arr.attrs["description"] = spec.description
    return arr


def create_store(
    url: str | Path,
    layout: StoreLayout,
    token_coords: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    *,
    group: str | None = None,
) -> None:
    """Create an empty store (no checkpoints). Refuses to overwrite an existing one."""
    try:
        _open_group(url, group, "r")
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        pass
    else:
        raise FileExistsError(
            f"a store already exists at {url}{'/' + group if group else ''}; open it instead"
        )
    problems = [
        Problem(
            f"token coord '{k}'",
            f"expected length {layout.n_tokens}, found {len(v)}",
            "wrong_length",
        )
        for k, v in token_coords.items()
        if len(v) != layout.n_tokens
    ]
    problems += [
        Problem(f"token coord '{k}'", "missing", "missing_coord")
        for k in S.TOKEN_COORDS
        if k not in token_coords
    ]
    problems += [
        Problem(f"attrs.{k}", "missing", "missing_attr")
        for k in S.REQUIRED_ATTRS
        if k not in attrs and k not in _AUTO_ATTRS
    ]
    if problems:
        raise SchemaError(problems, "cannot create store")
    g = _open_group(url, group, "a")
    T, tc = layout.n_tokens, min(layout.token_chunk, layout.n_tokens)
    for name, spec in S.TOKEN_COORDS.items():
        arr = _create(g, spec, (T,), (T,))
        arr[:] = np.asarray(token_coords[name]).astype(str if spec.dtype == "str" else spec.dtype)
    for spec in S.CHECKPOINT_COORDS.values():
        _create(g, spec, (0,), (1,))
    _create(g, S.COMPLETE, (0,), (1,))
    _create(g, S.CHECKSUMS, (0,), (1,))
    # Hidden states compress only ~1.08x with zstd: store them raw, save the CPU.
    _create(
        g,
        S.HIDDEN,
        (0, layout.n_layers, T, layout.n_features),
        (1, 1, tc, layout.n_features),
        compressors=None,
    )
    for spec in S.LOGIT_STATS.values():
        _create(g, spec, (0, T), (1, tc))
    _create(g, S.TOPK_IDS, (0, T, layout.topk), (1, tc, layout.topk))
    _create(g, S.TOPK_LOGPROBS, (0, T, layout.topk), (1, tc, layout.topk))
    vchunk = max(1, min(layout.vocab_size, (8 << 20) // (2 * layout.n_features)))
    _create(
        g, S.UNEMBEDDING, (0, layout.vocab_size, layout.n_features), (1, vchunk, layout.n_features)
    )
    for spec in S.BEHAVIOR.values():
        _create(g, spec, (0,), (1,))
    R = layout.lora_rank_capacity
    for module, (fin, fout) in layout.lora_modules.items():
        a, b = S.lora_variable_specs(module)
        _create(g, a, (0, layout.n_blocks, R, fin), (1, layout.n_blocks, R, fin))
        _create(g, b, (0, layout.n_blocks, fout, R), (1, layout.n_blocks, fout, R))
    # xarray reads non-dimension coordinates from this CF attribute.
    g["hidden"].attrs["coordinates"] = " ".join([*S.TOKEN_COORDS, *S.CHECKPOINT_COORDS])
    full_attrs = {
        **dict(attrs),
        "schema_version": S.SCHEMA_VERSION,
        "store_kind": S.STORE_KIND,
        "store_id": attrs.get("store_id") or uuid.uuid4().hex,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "token_chunk": tc,
        "lora_modules": {m: list(io) for m, io in layout.lora_modules.items()},
        "lora_rank_capacity": R,
        "head_hashes": [],
    }
    g.attrs.update(_jsonable(full_attrs))


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def read_attrs(url: str | Path, group: str | None = None) -> dict[str, Any]:
    return dict(_open_group(url, group, "r").attrs)


def check_schema_version(attrs: Mapping[str, Any], where: str) -> list[Problem]:
    version = attrs.get("schema_version")
    if version is None:
        return [
            Problem(
                f"{where} attrs.schema_version",
                f"expected an integer <= {S.SCHEMA_VERSION}, found none: not a repcollapse store",
                "missing_attr",
            )
        ]
    if not isinstance(version, int) or version > S.SCHEMA_VERSION:
        return [
            Problem(
                f"{where} attrs.schema_version",
                f"store has schema version {version}, this code reads up to {S.SCHEMA_VERSION}: upgrade repcollapse",
                "newer_schema",
            )
        ]
    return []


def complete_mask(url: str | Path, group: str | None = None) -> np.ndarray:
    g = _open_group(url, group, "r")
    return np.asarray(g["complete"][:]).astype(bool)


def open_store(
    url: str | Path, *, group: str | None = None, include_incomplete: bool = False
) -> xr.Dataset:
    """Open a store as a lazy (dask) xarray Dataset listing only complete checkpoints.

    The ``checkpoint`` dimension is indexed by checkpoint name, so ``ds.sel(checkpoint=name)``
    works. Refuses a store written by a newer schema version.
    """
    attrs = read_attrs(url, group)
    problems = check_schema_version(attrs, str(url))
    if problems:
        raise SchemaError(problems, f"cannot open {url}")
    ds = xr.open_zarr(str(url), group=group, consolidated=False, zarr_format=3)
    if not include_incomplete:
        keep = np.flatnonzero(np.asarray(ds["complete"].values).astype(bool))
        ds = ds.isel(checkpoint=keep)
    ds = _fixed_width_strings(ds)
    return ds.assign_coords(checkpoint=ds["name"].values)


def as_str_array(values: Any) -> np.ndarray:
    """numpy StringDType / object -> fixed-width unicode (what pandas and sklearn expect)."""
    return np.array([str(x) for x in np.asarray(values).ravel()], dtype=str).reshape(
        np.shape(values)
    )


def _fixed_width_strings(ds: xr.Dataset) -> xr.Dataset:
    converted = {
        name: (var.dims, as_str_array(var.values), var.attrs)
        for name, var in ds.variables.items()
        if var.dtype.kind in ("T", "O")
    }
    coords = {k: v for k, v in converted.items() if k in ds.coords}
    data = {k: v for k, v in converted.items() if k not in ds.coords}
    return ds.assign_coords(coords).assign(data)


class StoreWriter:
    """Appends checkpoints to an existing store; used by extract."""

    def __init__(self, url: str | Path, *, group: str | None = None) -> None:
        self.url, self.group = url, group
        self.attrs = read_attrs(url, group)
        problems = check_schema_version(self.attrs, str(url))
        if problems:
            raise SchemaError(problems, f"cannot write to {url}")
        self.g = _open_group(url, group, "r+")
        self.token_chunk = int(self.attrs["token_chunk"])
        self.checksums = ChecksumLog()

    # -- slots ---------------------------------------------------------------------------------
    def _checkpoint_arrays(self) -> list[zarr.Array]:
        arrays = []
        for _, arr in self.g.arrays():
            if arr.metadata.dimension_names and arr.metadata.dimension_names[0] == S.CHECKPOINT:
                arrays.append(arr)
        return arrays

    def names(self) -> list[str]:
        return [str(x) for x in self.g["name"][:]]

    def status(self, name: str) -> str:
        """'absent', 'incomplete' or 'complete'."""
        names = self.names()
        if name not in names:
            return "absent"
        return "complete" if int(self.g["complete"][names.index(name)]) else "incomplete"

    def reserve(self, coords: Mapping[str, Any]) -> int:
        """Slot index for checkpoint ``coords['name']``: its old slot if present, else a new one.

        Re-using the slot of an incomplete checkpoint is what makes extraction resumable: the
        rerun overwrites the same chunks and only then sets ``complete``.
        """
        missing = [k for k in S.CHECKPOINT_COORDS if k not in coords]
        if missing:
            raise SchemaError(
                [Problem(f"checkpoint coord '{k}'", "missing", "missing_coord") for k in missing]
            )
        with store_lock(self.url):
            self.g = _open_group(self.url, self.group, "r+")  # re-read shapes under the lock
            names = self.names()
            if coords["name"] in names:
                index = names.index(coords["name"])
                if int(self.g["complete"][index]):
                    raise FileExistsError(
                        f"checkpoint {coords['name']!r} is already complete in {self.url}"
                    )
            else:
                index = len(names)
                for arr in self._checkpoint_arrays():
                    arr.resize((index + 1, *arr.shape[1:]))
            for key in S.CHECKPOINT_COORDS:
                self.g[key][index] = coords[key]
            self.g["complete"][index] = 0
        return index

    def add_head(self, weight: np.ndarray) -> int:
        """Store an unembedding matrix once per distinct content; returns its head index."""
        import hashlib

        w16 = np.ascontiguousarray(weight, dtype=np.float16)
        digest = hashlib.sha256(w16.tobytes()).hexdigest()
        with store_lock(self.url):
            self.g = _open_group(self.url, self.group, "r+")
            hashes = list(self.g.attrs.get("head_hashes", []))
            if digest in hashes:
                return hashes.index(digest)
            arr = self.g["unembedding"]
            # A row beyond the recorded hashes is an orphan of a write killed before its hash
            # was recorded: reuse it, so a resumed run ends identical to an uninterrupted one.
            index = len(hashes)
            if arr.shape[0] <= index:
                arr.resize((index + 1, *arr.shape[1:]))
            arr[index] = w16
            # The hash is recorded only after the data is written: a killed write re-adds it.
            self.g.attrs["head_hashes"] = [*hashes, digest]
            return index

    # -- data ----------------------------------------------------------------------------------
    def write_hidden(self, index: int, t0: int, block: np.ndarray) -> None:
        """block: (layer, n_tokens, feature) for tokens [t0, t0 + n). t0 must be chunk-aligned."""
        if t0 % self.token_chunk:
            raise ValueError(
                f"write_hidden: t0 must be a multiple of token_chunk={self.token_chunk}, found {t0}"
            )
        arr = self.g["hidden"]
        data = block.astype(np.float16, copy=False)
        arr[index, :, t0 : t0 + block.shape[1], :] = data
        self.checksums.add(index, arr, (0, t0, 0), data)

    def write_token_vars(self, index: int, t0: int, values: Mapping[str, np.ndarray]) -> None:
        """Logit statistics and top-k for tokens [t0, t0 + n)."""
        for name, arr in values.items():
            if name not in S.LOGIT_STATS and name not in (S.TOPK_IDS.name, S.TOPK_LOGPROBS.name):
                raise KeyError(
                    f"unknown token variable {name!r}; expected one of {[*S.LOGIT_STATS, 'topk_ids', 'topk_logprobs']}"
                )
            target = self.g[name]
            data = np.asarray(arr, dtype=target.dtype)
            target[index, t0 : t0 + data.shape[0]] = data
            self.checksums.add(index, target, (t0,) + (0,) * (data.ndim - 1), data)

    def write_lora(self, index: int, module: str, a: np.ndarray, b: np.ndarray) -> None:
        """a: (block, r, in), b: (block, out, r); zero-padded to the store's rank capacity."""
        cap = int(self.attrs["lora_rank_capacity"])
        r = a.shape[1]
        if r > cap:
            raise ValueError(f"LoRA rank {r} of {module} exceeds the store's rank capacity {cap}")
        pa = np.zeros((a.shape[0], cap, a.shape[2]), np.float32)
        pb = np.zeros((b.shape[0], b.shape[1], cap), np.float32)
        pa[:, :r], pb[:, :, :r] = a, b
        for name, data in ((S.lora_a_name(module), pa), (S.lora_b_name(module), pb)):
            arr = self.g[name]
            arr[index] = data
            self.checksums.add(index, arr, (0, 0, 0), data)

    def write_behavior(self, index: int, behavior: Mapping[str, Any]) -> None:
        for key in S.BEHAVIOR_KEYS:
            value = behavior.get(key)
            arr = self.g[f"behavior__{key}"]
            data = np.asarray(np.nan if value is None else float(value), dtype=arr.dtype)
            arr[index] = data
            self.checksums.add(index, arr, (), data)
        # behavior_json is a checkpoint coordinate: hashed from the store at completion.
        self.g["behavior_json"][index] = json.dumps(behavior, sort_keys=True, default=str)

    def record_checksums(self, index: int) -> None:
        """Write the slot's ``checksums_json`` (store_schema.checksums); before ``complete``.

        Stores created before checksums existed have no such array: they stay without.
        """
        known = self.checksums.pop(index)
        if S.CHECKSUMS.name in self.g:
            self.g[S.CHECKSUMS.name][index] = slot_record(self.g, index, known)

    def mark_complete(self, index: int) -> None:
        """Last write of a checkpoint: only now do readers see it."""
        self.record_checksums(index)
        self.g["complete"][index] = 1

    def copy_checkpoint(
        self,
        source: str,
        coords: Mapping[str, Any],
        behavior: Mapping[str, Any],
        after_write: Callable[[], None] = lambda: None,
    ) -> int:
        """A new checkpoint ``coords['name']`` holding the data of the complete checkpoint
        ``source`` (extract's twins), written like an extraction: reserve, per-checkpoint arrays,
        behaviour, token chunks, ``complete`` last. Returns the token count."""
        t = self.names().index(source)
        index = self.reserve(coords)
        after_write()
        apart = {*S.CHECKPOINT_COORDS, S.COMPLETE.name, "behavior_json", S.HIDDEN.name}
        token_vars = []
        for arr in self._checkpoint_arrays():  # after reserve: resized
            name = arr.path.rsplit("/", 1)[-1]
            if name in apart or name.startswith("behavior__"):
                continue
            if S.TOKEN in (arr.metadata.dimension_names or ()):
                token_vars.append(name)
                continue
            arr[index] = arr[t]  # LoRA factors and any other per-checkpoint array
            after_write()
        self.write_behavior(index, behavior)
        after_write()
        hidden = self.g[S.HIDDEN.name]
        n_tokens, step = hidden.shape[2], self.token_chunk
        for t0 in range(0, n_tokens, step):  # chunk by chunk: memory flat in the token count
            self.write_hidden(index, t0, hidden[t, :, t0 : t0 + step, :])
            after_write()
            self.write_token_vars(index, t0, {k: self.g[k][t, t0 : t0 + step] for k in token_vars})
            after_write()
        self.mark_complete(index)
        after_write()
        return int(n_tokens)


def store_exists(url: str | Path, group: str | None = None) -> bool:
    try:
        _open_group(url, group, "r")
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return False
    return True
