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
from store_schema.protocol import checkpoint_arrays, committed_slots, protocol_step, repair_slots

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
    """Create an empty store (no checkpoints). Refuses to overwrite an existing one or other data.

    Atomic (store_schema.creation): a killed creation leaves no store, and the next one cleans up.
    """
    from store_schema.creation import begin_creation, creation_state, refuse_existing

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
    problems += [
        Problem(f"attrs.{k}", "missing", "missing_attr")
        for k in S.REQUIRED_ATTRS
        if k not in attrs and k not in _AUTO_ATTRS
    ]
    if problems:
        raise SchemaError(problems, "cannot create store")
    with store_lock(url):
        build_url, build_group, finish = begin_creation(url, group)
        _build_store(build_url, build_group, layout, token_coords, attrs)
        finish()


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
    writes, and on a store left by a killed writer (store_schema.opening).
    """
    from store_schema.opening import open_committed

    attrs = read_attrs(url, group)
    problems = check_schema_version(attrs, str(url))
    if problems:
        raise SchemaError(problems, f"cannot open {url}")
    ds = open_committed(url, group)
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
        """Every checkpoint-dim array, ``name`` last (the order reserve resizes in)."""
        return checkpoint_arrays(self.g)

    def names(self) -> list[str]:
        """Names of the committed slots (not an orphan tail of a killed reservation)."""
        return [str(x) for x in self.g["name"][: committed_slots(self.g)]]

    def repair(self) -> list[str]:
        """Cut off what killed reservations and head writes left (store_schema.protocol); returns
        what was cut. Safe beside live writers: their slots have names, and this holds the lock."""
        with store_lock(self.url):
            self.g = _open_group(self.url, self.group, "r+")
            return repair_slots(self.g)

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

        The protocol (docs/store.md): under the lock, repair any orphan tail, resize every
        checkpoint array but ``name``, write the coordinates and ``complete = 0``, resize
        ``name``, write the name. The slot is the checkpoint's from that last write on; a kill
        before it leaves an orphan that the next writer cuts off.
        """
        missing = [k for k in S.CHECKPOINT_COORDS if k not in coords]
        if missing:
            raise SchemaError(
                [Problem(f"checkpoint coord '{k}'", "missing", "missing_coord") for k in missing]
            )
        if not str(coords["name"]):  # an empty name is what marks an uncommitted slot
            raise ValueError("reserve: coords['name']: expected a non-empty name, found ''")
        with store_lock(self.url):
            self.g = _open_group(self.url, self.group, "r+")  # re-read shapes under the lock
            repair_slots(self.g)
            names = self.names()
            new = coords["name"] not in names
            if not new:
                index = names.index(coords["name"])
                if int(self.g["complete"][index]):
                    raise FileExistsError(
                        f"checkpoint {coords['name']!r} is already complete in {self.url}"
                    )
            else:
                index = len(names)
                for arr in self._checkpoint_arrays()[:-1]:  # all but `name`
                    arr.resize((index + 1, *arr.shape[1:]))
                    protocol_step(f"reserve: resize {arr.path.rsplit('/', 1)[-1]}")
            for key in S.CHECKPOINT_COORDS:
                if key != "name":
                    self.g[key][index] = coords[key]
            self.g["complete"][index] = 0
            protocol_step("reserve: coords")
            if new:
                name = self.g["name"]
                name.resize((index + 1,))
                protocol_step("reserve: resize name")
            self.g["name"][index] = coords["name"]
            protocol_step("reserve: name (slot committed)")
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
                protocol_step("head: resize unembedding")
            arr[index] = w16
            protocol_step("head: unembedding written")
            # The hash is recorded only after the data is written: a killed write re-adds it.
            self.g.attrs["head_hashes"] = [*hashes, digest]
            protocol_step("head: hash recorded")
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
        protocol_step("complete")

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
    """True once a creation finished (its attributes, written last, are there)."""
    try:
        g = _open_group(url, group, "r")
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return False
    return "schema_version" in g.attrs
