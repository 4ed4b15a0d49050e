"""The one reader of an activation store: what analysis, the demo and extract read from it.

``StoreReader(url, group=None)`` is read-only and refuses a store of a newer schema version.
It answers, without loading any array it does not need:

- ``attrs``, ``token_chunk``, ``n_layers`` / ``n_tokens`` / ``n_features``;
- ``slots()``: checkpoint name -> slot index of every committed slot (complete or not: the
  position in the store's ``checkpoint`` dimension), ``complete_checkpoints()``, ``status(name)``;
- ``checkpoint_values(name, keys)``: checkpoint coordinates of one slot (rank, scaling, head...);
- ``token_coords(keys)``: the token coordinates as numpy arrays;
- ``dataset()``: the lazy xarray Dataset of the complete checkpoints (``open_store``);
- ``hidden_blocks(slots)``: a picklable ``BlockReader`` that reads one (slot, layer, token range)
  block of ``hidden`` and checks it against the sha256 recorded at extraction;
- ``codec``: the store's codec of ``hidden`` (``store_schema.codecs``; an unknown one is refused
  on open); blocks and the Dataset come back decoded (int8-token: dequantised to float32);
- ``generated_groups()`` and ``sub(group)``: the generated-output sub-stores.

Writers (``StoreWriter``) never go through it; every other module reads the store here, so the
contract of docs/store.md is interpreted in one place.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr
import zarr

from repcollapse.store_schema import codecs as C
from repcollapse.store_schema import schema as S
from repcollapse.store_schema.checksums import check_block, chunk_key, hidden_digests
from repcollapse.store_schema.problems import SchemaError
from repcollapse.store_schema.protocol import committed_slots
from repcollapse.store_schema.store import (
    _open_group,
    as_str_array,
    check_schema_version,
    open_store,
    read_attrs,
)

Status = Literal["absent", "incomplete", "complete"]


@dataclass(frozen=True)
class BlockReader:
    """Reads ``hidden`` blocks straight from the store and checks each one against the checksum
    recorded at extraction. Picklable (plain fields only): dask ships it to its workers."""

    url: str
    group: str | None = None
    expected: Mapping[tuple[int, str], str] = field(default_factory=dict)
    """sha256 of each hidden chunk by (slot, chunk key) (``store_schema.checksums``); a block
    with no entry (a store written before checksums) is read unchecked."""
    names: Mapping[int, str] = field(default_factory=dict)
    """Slot -> checkpoint name, for the error message."""
    token_chunk: int = 1
    codec: str = C.DEFAULT_CODEC
    """The store's codec name (store_schema.codecs): int8-token blocks are dequantised."""

    def read(self, slot: int, layer: int, t0: int, t1: int) -> np.ndarray:
        """``hidden[slot, layer, t0:t1, :]`` decoded: the store's ``hidden_dtype``, or float32
        (int8 values times their scales) in an int8-token store. Raises SchemaError when the
        block's recorded checksum (of the stored values) does not match (``t0`` must start a
        token chunk then); the scales are checked by ``verify_checkpoints`` beforehand."""
        block = _array(self.url, self.group, S.HIDDEN.name)[slot, layer, t0:t1, :]
        if self.expected:
            key = chunk_key((layer, t0 // self.token_chunk, 0))
            name = self.names.get(slot, str(slot))
            check_block(self.expected.get((slot, key)), block, name, key, self.url)
        if C.parse_codec(self.codec).quantised:
            scale = _array(self.url, self.group, C.SCALE.name)[slot, layer, t0:t1]
            return C.dequantise_int8(block, scale)
        return block


@functools.cache
def _array(url: str, group: str | None, name: str) -> Any:
    # One open per process and store: a pass reads thousands of blocks.
    return _open_group(url, group, "r")[name]


class StoreReader:
    """Read-only access to one store (or one sub-group of it, e.g. a generated sub-store)."""

    def __init__(self, url: str | Path, group: str | None = None) -> None:
        self.url, self.group = str(url), group
        self.attrs: dict[str, Any] = read_attrs(url, group)
        problems = check_schema_version(self.attrs, self.where)
        if problems:
            raise SchemaError(problems, f"cannot open {self.where}")
        self.codec: C.HiddenCodec = C.codec_of(self.attrs, self.where)
        """The store's codec of ``hidden``; an unknown one was refused above."""

    @property
    def where(self) -> str:
        """The store and group, for messages."""
        return f"{self.url}/{self.group}" if self.group else self.url

    def _g(self) -> zarr.Group:
        # Re-opened per call: slots appear while a writer works, and a group is cheap to open.
        return _open_group(self.url, self.group, "r")

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def token_chunk(self) -> int:
        return int(self.attrs["token_chunk"])

    @property
    def hidden_dtype(self) -> np.dtype:
        """dtype of ``hidden`` as read: float16, or float32 where the store was created so or
        its codec is int8-token (dequantised on read)."""
        g = self._g()
        return self.codec.decoded_dtype(C.logical_dtype(g, self.codec))

    @property
    def hidden_shape(self) -> tuple[int, int, int, int]:
        """(slots, layers, tokens, features) of ``hidden``."""
        return tuple(int(x) for x in self._g()[S.HIDDEN.name].shape)  # type: ignore[return-value]

    @property
    def n_layers(self) -> int:
        return self.hidden_shape[1]

    @property
    def n_tokens(self) -> int:
        return self.hidden_shape[2]

    @property
    def n_features(self) -> int:
        return self.hidden_shape[3]

    # -- checkpoints ---------------------------------------------------------------------------
    def slots(self) -> dict[str, int]:
        """Name -> slot of every committed slot, complete or not (an orphan tail of a killed
        reservation left out). The slot is the index into the ``checkpoint`` dimension."""
        g = self._g()
        names = g["name"][: committed_slots(g)]
        return {str(n): i for i, n in enumerate(np.asarray(names).tolist())}

    def complete_mask(self) -> np.ndarray:
        """``complete`` of the committed slots, as booleans."""
        g = self._g()
        return np.asarray(g[S.COMPLETE.name][: committed_slots(g)]).astype(bool)

    def complete_checkpoints(self) -> list[str]:
        """Names of the complete checkpoints, in slot order."""
        mask = self.complete_mask()
        return [name for name, slot in self.slots().items() if slot < len(mask) and mask[slot]]

    def status(self, name: str) -> Status:
        slots = self.slots()
        if name not in slots:
            return "absent"
        return "complete" if self.complete_mask()[slots[name]] else "incomplete"

    def checkpoint_values(self, name: str, keys: Iterable[str]) -> dict[str, Any]:
        """Checkpoint coordinates (``schema.CHECKPOINT_COORDS``) or behaviour of one slot, as
        Python scalars."""
        slots = self.slots()
        if name not in slots:
            raise KeyError(f"{self.where}: no checkpoint {name!r}; slots: {sorted(slots)}")
        g, slot = self._g(), slots[name]
        out = {}
        for key in keys:
            if key not in g:
                raise KeyError(f"{self.where}: no variable {key!r}")
            value = np.asarray(g[key][slot])
            out[key] = str(value) if value.dtype.kind in "TUSO" else value.item()
        return out

    # -- tokens and arrays ---------------------------------------------------------------------
    def token_coords(self, keys: Iterable[str] = tuple(S.TOKEN_COORDS)) -> dict[str, np.ndarray]:
        """Token coordinates by name (strings as fixed-width unicode)."""
        g = self._g()
        out = {}
        for key in keys:
            if key not in S.TOKEN_COORDS:
                raise KeyError(
                    f"{key!r} is not a token coordinate; expected one of {list(S.TOKEN_COORDS)}"
                )
            values = np.asarray(g[key][:])
            out[key] = as_str_array(values) if values.dtype.kind in "TO" else values
        return out

    def dataset(self, *, include_incomplete: bool = False) -> xr.Dataset:
        """The store as a lazy (dask) Dataset; complete checkpoints only unless asked."""
        return open_store(self.url, group=self.group, include_incomplete=include_incomplete)

    def hidden_blocks(self, verify: Mapping[str, int] | None = None) -> BlockReader:
        """The block reader of ``hidden``. ``verify``: name -> slot of the checkpoints whose
        blocks are checked against their recorded sha256 (a few strings per chunk are loaded
        now; the hashing is of what is read anyway). None: nothing checked."""
        slots = dict(verify or {})
        return BlockReader(
            self.url,
            self.group,
            expected=hidden_digests(self.url, slots, group=self.group) if slots else {},
            names={i: c for c, i in slots.items()},
            token_chunk=self.token_chunk,
            codec=self.codec.name,
        )

    # -- generated-output sub-stores -----------------------------------------------------------
    def generated_groups(self) -> dict[str, str]:
        """Checkpoint name -> group of every complete generated sub-store ({} if none)."""
        root = _open_group(self.url, None, "r")
        if S.GENERATED_GROUP not in root:
            return {}
        return dict(root[S.GENERATED_GROUP].attrs.get(S.GENERATED_INDEX_ATTR, {}))

    def sub(self, group: str) -> StoreReader:
        """The reader of a sub-group of the same store."""
        return StoreReader(self.url, group)
