"""The writer of a store's checkpoints: reserve a slot, write its chunks, mark it complete.

Used by extract (one process per checkpoint list; several processes may share a local store:
reserving a slot runs under the store's file lock). Every step reports to
``repcollapse.store_schema.protocol.protocol_step``; docs/store.md ("Write protocol") says what a kill at
each step leaves and how the next run repairs it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from repcollapse.store_schema import codecs as C
from repcollapse.store_schema import labels as L
from repcollapse.store_schema import schema as S
from repcollapse.store_schema.checksums import ChecksumLog, slot_record
from repcollapse.store_schema.problems import Problem, SchemaError
from repcollapse.store_schema.protocol import (
    checkpoint_arrays,
    committed_slots,
    protocol_step,
    repair_slots,
)
from repcollapse.store_schema.store import (
    _open_group,
    check_schema_version,
    consolidate,
    read_attrs,
    store_lock,
)


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
        self.codec = C.codec_of(self.attrs, str(url))
        """The store's codec of ``hidden`` (store_schema.codecs): write_hidden encodes with it."""
        self.hidden_dtype = np.dtype(C.logical_dtype(self.g, self.codec))
        """The store's hidden dtype (float16 or float32, fixed at creation): what extraction
        casts to and range-checks against, before the codec."""
        self.checksums = ChecksumLog()

    # -- slots ---------------------------------------------------------------------------------
    def _checkpoint_arrays(self) -> list[zarr.Array]:
        """Every checkpoint-dim array, ``name`` last (the order reserve resizes in)."""
        return checkpoint_arrays(self.g)

    def names(self) -> list[str]:
        """Names of the committed slots (not an orphan tail of a killed reservation)."""
        return [str(x) for x in self.g["name"][: committed_slots(self.g)]]

    def repair(self) -> list[str]:
        """Cut off what killed reservations and head writes left (repcollapse.store_schema.protocol); returns
        what was cut. Safe beside live writers: their slots have names, and this holds the lock."""
        with store_lock(self.url):
            self.g = _open_group(self.url, self.group, "r+")
            done = repair_slots(self.g)
            # Also after a kill between a step and its consolidation: the snapshot catches up.
            consolidate(self.url)
            return done

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
        checkpoint array but ``name``, write the coordinates (with the labels' UTF-8 rows,
        store_schema.labels) and ``complete = 0``, resize ``name``, write the name. The slot is
        the checkpoint's from that last write on; a kill before it leaves an orphan that the
        next writer cuts off. A label too long for its row is refused before anything is written.
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
            rows = L.checkpoint_rows(self.g, coords)  # LabelTooLong: nothing written yet
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
            # name's row too: in an uncommitted slot until the name itself is written
            L.write_rows(self.g, index, rows)
            self.g["complete"][index] = 0
            protocol_step("reserve: coords")
            if new:
                name = self.g["name"]
                name.resize((index + 1,))
                protocol_step("reserve: resize name")
            self.g["name"][index] = coords["name"]
            protocol_step("reserve: name (slot committed)")
            if new:  # a plain open (consolidated metadata) lists the slot too, complete = 0
                consolidate(self.url)
        return index

    def write_coords(self, index: int, coords: Mapping[str, Any]) -> None:
        """Rewrite the coordinates of a reserved slot, every one but ``name`` (and its UTF-8
        row): ``extract --slots-from`` fills in what the reservation could not know."""
        rows = L.checkpoint_rows(self.g, {k: v for k, v in coords.items() if k != "name"})
        for key in S.CHECKPOINT_COORDS:
            if key != "name":
                self.g[key][index] = coords[key]
        L.write_rows(self.g, index, rows)

    def add_head(self, weight: np.ndarray) -> int:
        """Store an unembedding matrix once per distinct content; returns its head index."""

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
            consolidate(self.url)  # the attribute write replaced the root's zarr.json
            return index

    # -- data ----------------------------------------------------------------------------------
    def write_hidden(self, index: int, t0: int, block: np.ndarray) -> None:
        """block: (layer, n_tokens, feature) for tokens [t0, t0 + n), cast to the store's hidden
        dtype (the caller range-checks first: extract.forward), then encoded with the store's
        codec (bitround: rounded here, so the checksums are of what readers get back; int8-token:
        int8 values and their scales). t0 must be chunk-aligned."""
        data = block.astype(self.hidden_dtype, copy=False)
        if self.codec.quantised:
            values, scale = C.quantise_int8(data)
            self._write_encoded(index, t0, values, scale)
            return
        if self.codec.kind == "bitround":
            data = C.bitround(data, int(self.codec.keepbits or 0))
        self._write_encoded(index, t0, data, None)

    def _write_encoded(
        self, index: int, t0: int, values: np.ndarray, scale: np.ndarray | None
    ) -> None:
        """Write (and hash) ``hidden`` values as stored, and int8-token's scales."""
        if t0 % self.token_chunk:
            raise ValueError(
                f"write_hidden: t0 must be a multiple of token_chunk={self.token_chunk}, found {t0}"
            )
        arr = self.g["hidden"]
        arr[index, :, t0 : t0 + values.shape[1], :] = values
        self.checksums.add(index, arr, (0, t0, 0), values)
        if scale is not None:
            target = self.g[C.SCALE.name]
            target[index, :, t0 : t0 + scale.shape[1]] = scale
            self.checksums.add(index, target, (0, t0), scale)

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
        """Write the slot's ``checksums_json`` (repcollapse.store_schema.checksums); before ``complete``.

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
        consolidate(self.url)  # other tools' plain open now lists the checkpoint

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
        apart = {
            *S.CHECKPOINT_COORDS,
            *map(L.form_name, L.CHECKPOINT_LABELS),  # the twin's own labels, written by reserve
            S.COMPLETE.name,
            "behavior_json",
            S.HIDDEN.name,
            C.SCALE.name,
        }
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
        scale = self.g[C.SCALE.name] if self.codec.quantised else None
        n_tokens, step = hidden.shape[2], self.token_chunk
        for t0 in range(0, n_tokens, step):  # chunk by chunk: memory flat in the token count
            # As stored (encoded values, and scales): a copy never re-encodes.
            self._write_encoded(
                index,
                t0,
                hidden[t, :, t0 : t0 + step, :],
                None if scale is None else scale[t, :, t0 : t0 + step],
            )
            after_write()
            self.write_token_vars(index, t0, {k: self.g[k][t, t0 : t0 + step] for k in token_vars})
            after_write()
        self.mark_complete(index)
        after_write()
        return int(n_tokens)
