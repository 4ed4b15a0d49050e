"""Create and open activation stores (Zarr v3; local paths and fsspec URLs); the lock.

Writes go through zarr directly (``repcollapse.store_schema.writer``: a checkpoint's region is written
chunk-aligned and the completion mark is one chunk of its own, written last); reads go through
xarray. Several processes may extract different checkpoints into one local store: the only
shared step, reserving a checkpoint slot (resizing the ``checkpoint`` dim), runs under the
file lock here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import threading
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from repcollapse.store_schema import codecs as C
from repcollapse.store_schema import labels as L
from repcollapse.store_schema import schema as S
from repcollapse.store_schema.location import is_local as _is_local
from repcollapse.store_schema.location import local_path as _local_path
from repcollapse.store_schema.location import open_group as _open_group
from repcollapse.store_schema.problems import Problem, SchemaError
from repcollapse.store_schema.protocol import committed_slots, protocol_step

# Re-entrant, with a per-path depth: create_store and repair take the lock themselves and are
# also called by code that already holds it (a second flock on a new descriptor would block).
_LOCAL_LOCK = threading.RLock()
_HELD: dict[Path, int] = {}


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
    hidden_dtype: str = S.DEFAULT_HIDDEN_DTYPE
    """dtype of ``hidden`` (``schema.HIDDEN_DTYPES``), recorded as ``attrs.hidden_dtype``."""
    codec: str = C.DEFAULT_CODEC
    """codec of ``hidden`` (``store_schema.codecs``), recorded as ``attrs.hidden_codec``."""

    def __post_init__(self) -> None:
        S.check_hidden_dtype(self.hidden_dtype, "StoreLayout.hidden_dtype")
        C.parse_codec(self.codec, "StoreLayout.codec")
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
    S.HIDDEN_DTYPE_ATTR,
    C.CODEC_ATTR,
}
"""Root attributes create_store sets itself (the caller need not pass them)."""


@contextlib.contextmanager
def store_lock(url: str | Path) -> Iterator[None]:
    """Exclusive lock for the steps that change shared metadata (creation, slot reservation,
    heads, repair). Re-entrant within a process; the kernel drops it when a holder is killed."""
    with _LOCAL_LOCK:
        if not _is_local(url):
            # fsspec stores have no portable lock: one writer process per remote store.
            yield
            return
        # Beside the store, not inside it: zarr warns about foreign objects in a hierarchy.
        store_path = _local_path(url).resolve()
        path = store_path.with_name(store_path.name + ".lock")
        if _HELD.get(path):
            _HELD[path] += 1
            try:
                yield
            finally:
                _HELD[path] -= 1
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            _HELD[path] = 1
            try:
                yield
            finally:
                del _HELD[path]
                fcntl.flock(fh, fcntl.LOCK_UN)


def consolidate(url: str | Path) -> None:
    """Rewrite the consolidated metadata of the whole store (the root's ``zarr.json``), so a
    plain ``xr.open_zarr(url)`` opens it in one read and without a warning.

    Written at creation, after each completed checkpoint, a new head, and every repair. It is
    a snapshot for other tools: a writer killed between a step and this one leaves it one step
    behind until the next writer's repair, so nothing in this package reads it (every open
    passes ``use_consolidated=False``; slots are counted from ``name``).
    """
    with store_lock(url):
        _consolidate_now(url)
    protocol_step("consolidate metadata")


def _consolidate_now(url: str | Path) -> None:
    with warnings.catch_warnings():
        # zarr notes that consolidated metadata is not (yet) in the Zarr v3 spec: known.
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(str(url), zarr_format=3)


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
    arr.attrs.update(S.cf_attrs(spec))
    return arr


def create_store(
    url: str | Path,
    layout: StoreLayout,
    token_coords: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    *,
    group: str | None = None,
) -> None:
    """Create an empty store (no checkpoints). Refuses to overwrite an existing one or other data.

    Atomic (repcollapse.store_schema.creation): a killed creation leaves no store, and the next one cleans up.
    """
    from repcollapse.store_schema.creation import begin_creation, creation_state, refuse_existing

    refuse_existing(url, group, creation_state(url, group))  # before validating: cheap, clear
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
    problems += L.label_problems(token_coords)
    problems += [
        Problem(f"attrs.{k}", "missing", "missing_attr")
        for k in S.REQUIRED_ATTRS
        if k not in attrs and k not in _AUTO_ATTRS
    ]
    problems += _layout_attr_problems(attrs, layout)
    if problems:
        raise SchemaError(problems, "cannot create store")
    with store_lock(url):
        build_url, build_group, finish = begin_creation(url, group)
        _build_store(build_url, build_group, layout, token_coords, attrs)
        if group is None and _is_local(url):  # published already consolidated by the rename
            _consolidate_now(build_url)
        elif group is None:  # remote, built in place
            consolidate(url)
        finish()
        if group is not None:  # a sub-store: the root's snapshot must list it
            consolidate(url)


def _layout_attr_problems(attrs: Mapping[str, Any], layout: StoreLayout) -> list[Problem]:
    """The attrs that contradict the layout: where given, the hidden dtype and the codec must be
    the layout's (the layout, not the attrs, decides how ``hidden`` is written)."""
    checks = (  # attr, the layout's value, its name in the message, problem kind
        (S.HIDDEN_DTYPE_ATTR, layout.hidden_dtype, "hidden dtype", "wrong_dtype"),
        (C.CODEC_ATTR, layout.codec, "codec", "codec_mismatch"),
    )
    return [
        Problem(
            f"attrs.{key}", f"expected the layout's {what} {want!r}, found {attrs[key]!r}", kind
        )
        for key, want, what, kind in checks
        if attrs.get(key, want) != want
    ]


def _build_store(
    url: str | Path,
    group: str | None,
    layout: StoreLayout,
    token_coords: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
) -> None:
    """Every array, then the root attributes last (what marks a remote store created)."""
    g = _open_group(url, group, "a")
    protocol_step("create: group")
    T, tc = layout.n_tokens, min(layout.token_chunk, layout.n_tokens)
    for name, spec in S.TOKEN_COORDS.items():
        arr = _create(g, spec, (T,), (T,))
        arr[:] = np.asarray(token_coords[name]).astype(str if spec.dtype == "str" else spec.dtype)
    protocol_step("create: token coords")
    for spec in S.CHECKPOINT_COORDS.values():
        _create(g, spec, (0,), (1,))
    # Every label again as UTF-8 bytes, for Zarr readers without a text type (store_schema.labels)
    L.create_forms(g, token_coords)
    _create(g, S.COMPLETE, (0,), (1,))
    _create(g, S.CHECKSUMS, (0,), (1,))
    # Lossless hidden states compress only ~1.08x with zstd: stored raw, saving the CPU. A
    # lossy codec (store_schema.codecs) brings its own filters and compressor.
    codec = C.parse_codec(layout.codec)
    hidden = _create(
        g,
        codec.hidden_spec(layout.hidden_dtype),
        (0, layout.n_layers, T, layout.n_features),
        (1, 1, tc, layout.n_features),
        **codec.zarr_kwargs(layout.hidden_dtype),
    )
    hidden.attrs[C.CODEC_ATTR] = codec.name
    if codec.quantised:
        hidden.attrs["dequantisation"] = C.DEQUANTISATION
        _create(g, C.SCALE, (0, layout.n_layers, T), (1, 1, tc))
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
    protocol_step("create: arrays")
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
        S.HIDDEN_DTYPE_ATTR: layout.hidden_dtype,
        C.CODEC_ATTR: codec.name,
    }
    g.attrs.update(_jsonable(full_attrs))
    protocol_step("create: attrs")


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
    """``complete`` of the committed slots (an orphan tail of a killed reservation left out)."""
    g = _open_group(url, group, "r")
    return np.asarray(g["complete"][: committed_slots(g)]).astype(bool)


def open_store(
    url: str | Path, *, group: str | None = None, include_incomplete: bool = False
) -> xr.Dataset:
    """Open a store as a lazy (dask) xarray Dataset listing only complete checkpoints.

    The ``checkpoint`` dimension is indexed by checkpoint name, so ``ds.sel(checkpoint=name)``
    works. Refuses a store written by a newer schema version. Safe while another process
    writes, and on a store left by a killed writer (repcollapse.store_schema.opening).
    """
    from repcollapse.store_schema.opening import open_committed

    attrs = read_attrs(url, group)
    problems = check_schema_version(attrs, str(url))
    if problems:
        raise SchemaError(problems, f"cannot open {url}")
    codec = C.codec_of(attrs, str(url))
    ds = open_committed(url, group)
    if codec.quantised:  # the view holds activations, not int8 codes (store_schema.codecs)
        hidden = ds[S.HIDDEN.name]
        decoded = hidden.astype(np.float32) * ds[C.SCALE.name]
        ds = ds.drop_vars(C.SCALE.name).assign({S.HIDDEN.name: decoded.assign_attrs(hidden.attrs)})
    if not include_incomplete:
        keep = np.flatnonzero(np.asarray(ds["complete"].values).astype(bool))
        ds = ds.isel(checkpoint=keep)
    ds = _fixed_width_strings(ds)
    ds = ds.assign_coords(checkpoint=ds["name"].values)
    if S.LAYER in ds.dims and S.LAYER not in ds.coords:  # stores keep no layer array
        layer = np.arange(ds.sizes[S.LAYER], dtype=np.int32)
        ds = ds.assign_coords({S.LAYER: (S.LAYER, layer, S.cf_attrs(S.LAYER_COORD))})
    return ds


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


def store_exists(url: str | Path, group: str | None = None) -> bool:
    """True once a creation finished (its attributes, written last, are there)."""
    try:
        g = _open_group(url, group, "r")
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return False
    return "schema_version" in g.attrs
