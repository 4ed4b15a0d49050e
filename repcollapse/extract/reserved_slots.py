"""Several writers on a store without a lock (object stores): slots reserved once, then disjoint
writes (docs/store.md, "Several writers on an object store").

An fsspec store (``s3://``, ``gs://``, ``memory://``) has no lock, and the steps of extract that
change shared metadata (creating the store, resizing the checkpoint arrays for a new slot,
adding an unembedding head to the root attributes, appending to ``extraction_log``) are
read-modify-write: two processes doing them at once lose one's change. So they are done once,
by one coordinator, before any worker starts:

- ``repcollapse store reserve`` (repcollapse.extract.reserve) runs extract's checks, creates the store or
  checks it, and for each checkpoint adds its unembedding head (it loads the model: the head is
  deduplicated by content, in checkpoint order, exactly as a sequential run does) and reserves
  its slot (name written, ``complete = 0``, LoRA coordinates left to the worker). It writes the
  slots file: per checkpoint its slot, head, the head's and the weight files' sha256.
- ``repcollapse extract --slots-from FILE`` (``check_reserved`` here, then
  repcollapse.extract.slot) writes only
  the reserved slots of its checkpoints: the slot's coordinates, factors, behaviour, chunks,
  checksums and ``complete`` last, every one a chunk of its own (the ``checkpoint`` chunk is 1).
  It changes no array's shape and no attribute and takes no lock. What it refuses before it
  writes: a checkpoint not in the file, a file reserved for another store, a slot that now
  holds another checkpoint, weights or an unembedding other than the reserved ones, a complete
  slot of another provenance. Its per-checkpoint timing goes to its own output, not to the
  store's ``extraction_log`` (a shared attribute): the coordinator records the reservation.

This module is the slots file and the worker's checks; it imports no other extract module
that could import it back.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repcollapse.extract.checkpoints import CheckpointSource
from repcollapse.extract.preflight import weights_sha256
from repcollapse.extract.store_io import Geometry, check_store
from repcollapse.store_schema import codecs as C
from repcollapse.store_schema.problems import Problem, SchemaError, UsageError
from repcollapse.store_schema.store import read_attrs, store_exists

FORMAT = "repcollapse.slots"
VERSION = 1


@dataclass(frozen=True)
class ReservedSlot:
    """One checkpoint's reservation, as the slots file records it."""

    checkpoint: str
    slot: int
    """Index along the store's ``checkpoint`` dim."""
    head: int
    """Index of its unembedding head (``unembedding``; ``attrs.head_hashes``)."""
    head_sha256: str
    weights_sha256: str
    """Of the weight files (repcollapse.extract.preflight.weights_sha256)."""
    manifest_sha256: str
    path: str
    """The checkpoint directory the coordinator read (for people; workers match by name)."""
    complete: bool = False
    """Already complete in the store when reserved: a worker given it skips it."""


@dataclass(frozen=True)
class SlotsFile:
    """What ``repcollapse store reserve`` writes and ``extract --slots-from`` reads."""

    store: str
    store_id: str
    probe_hash: str
    reserved_at: str
    slots: tuple[ReservedSlot, ...]
    source: str = ""
    """Where it was read from (not written): named in every refusal."""

    def entry(self, name: str) -> ReservedSlot:
        for s in self.slots:
            if s.checkpoint == name:
                return s
        raise KeyError(name)

    def check_names(self, names: Sequence[str], paths: Sequence[Path]) -> None:
        """Refuse a checkpoint that has no slot in the file (before anything is read or written)."""
        known = {s.checkpoint for s in self.slots}
        problems = [
            Problem(
                str(path),
                f"checkpoint {name!r} has no reserved slot in the slots file {self.source}; "
                f"expected one of {sorted(known)}: reserve it with `repcollapse store reserve` "
                "(before the workers start), or extract it without --slots-from",
                "not_reserved",
            )
            for name, path in zip(names, paths, strict=True)
            if name not in known
        ]
        if problems:
            raise UsageError("; ".join(str(p) for p in problems))

    def to_json(self) -> str:
        body = {
            "format": FORMAT,
            "version": VERSION,
            "store": self.store,
            "store_id": self.store_id,
            "probe_hash": self.probe_hash,
            "reserved_at": self.reserved_at,
            "slots": [asdict(s) for s in self.slots],
        }
        return json.dumps(body, indent=2) + "\n"


def read_slots_file(path: str | Path) -> SlotsFile:
    """Parse and check a slots file; a bad one is a UsageError naming the file and the field."""
    where = str(path)
    try:
        body = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"--slots-from {where}: no such file") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"--slots-from {where}: expected a JSON slots file, found: {e}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        found = body.get("format") if isinstance(body, dict) else type(body).__name__
        raise UsageError(
            f"{where}: format: expected {FORMAT!r} (written by `repcollapse store reserve`), "
            f"found {found!r}"
        )
    if body.get("version") != VERSION:
        raise UsageError(f"{where}: version: expected {VERSION}, found {body.get('version')!r}")
    for key in ("store", "store_id", "probe_hash", "reserved_at"):
        if not isinstance(body.get(key), str):
            raise UsageError(f"{where}: {key}: expected a string, found {body.get(key)!r}")
    if not isinstance(body.get("slots"), list):
        raise UsageError(f"{where}: slots: expected a list, found {body.get('slots')!r}")
    slots = []
    for i, raw in enumerate(body["slots"]):
        try:
            slot = ReservedSlot(**raw)
        except TypeError as e:
            raise UsageError(f"{where}: slots[{i}]: {e}") from None
        for key in ("slot", "head"):
            value = getattr(slot, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UsageError(
                    f"{where}: slots[{i}].{key}: expected an integer >= 0, found {value!r}"
                )
        slots.append(slot)
    for key in ("checkpoint", "slot"):
        values = [getattr(s, key) for s in slots]
        if len(set(values)) != len(values):
            raise UsageError(f"{where}: slots: expected each {key} once, found {values}")
    return SlotsFile(
        store=body["store"],
        store_id=body["store_id"],
        probe_hash=body["probe_hash"],
        reserved_at=body["reserved_at"],
        slots=tuple(slots),
        source=where,
    )


def write_slots_file(slots: SlotsFile, path: str | Path) -> None:
    """Written whole or not at all (a temporary file renamed): a worker never reads half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(slots.to_json())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def head_sha256(weight: np.ndarray) -> str:
    """The digest ``StoreWriter.add_head`` records for an unembedding (float16 bytes)."""
    w16 = np.ascontiguousarray(weight, dtype=np.float16)
    return hashlib.sha256(w16.tobytes()).hexdigest()


# -- a worker ----------------------------------------------------------------------------------
def _refuse(slots: SlotsFile, where: str, message: str, kind: str) -> None:
    raise SchemaError(
        [Problem(where, message, kind)],
        f"refusing to write with the slots file {slots.source}",
    )


def check_reserved(
    store: str | Path,
    slots: SlotsFile,
    sources: Sequence[CheckpointSource],
    hashes: dict[str, str],
    *,
    attrs: Mapping[str, Any],
    geometry: Geometry,
    coords: Mapping[str, np.ndarray],
) -> None:
    """Before anything is written: the store is the one reserved in and matches this run (as
    ``store_io.check_store``), and every checkpoint's slot still holds it, with the weights
    and manifest that were reserved. Only reads: never creates, repairs or consolidates.
    ``hashes``: weight hashes by name already computed, completed here."""
    if not store_exists(store):
        _refuse(
            slots,
            str(store),
            f"expected the store the slots file was reserved in (store_id {slots.store_id}), "
            "found no store: run `repcollapse store reserve` first",
            "not_reserved",
        )
    stored = read_attrs(store)
    if stored.get("store_id") != slots.store_id:
        _refuse(
            slots,
            f"{store} attrs.store_id",
            f"expected {slots.store_id} (the store {slots.store} the slots were reserved in), "
            f"found {stored.get('store_id')!r}: reserve again in this store",
            "not_reserved",
        )
    check_store(
        store,
        group=None,
        probe_hash=attrs["probe_hash"],
        tokenizer=attrs["tokenizer"],
        geometry=geometry,
        coords=coords,
        hidden_dtype=attrs["hidden_dtype"],
        codec=attrs.get(C.CODEC_ATTR, C.DEFAULT_CODEC),
    )
    from repcollapse.store_schema.location import open_group
    from repcollapse.store_schema.protocol import committed_slots

    g = open_group(store, None, "r")
    n = committed_slots(g)
    heads = list(stored.get("head_hashes", []))
    for src in sources:
        name, entry = src.manifest.name, slots.entry(src.manifest.name)
        at = f"{store} slot {entry.slot}"
        held = str(g["name"][entry.slot]) if entry.slot < n else None
        if held != name:
            _refuse(
                slots,
                at,
                f"expected checkpoint {name!r} (reserved there), found "
                f"{'no slot' if held is None else repr(held)}: the store changed after the "
                "reservation; reserve again",
                "not_reserved",
            )
        if entry.head >= len(heads) or heads[entry.head] != entry.head_sha256:
            _refuse(
                slots,
                f"{store} attrs.head_hashes[{entry.head}]",
                f"expected the head reserved for {name!r} (sha256 {entry.head_sha256[:16]}...), "
                f"found {heads[entry.head][:16] + '...' if entry.head < len(heads) else 'none'}",
                "not_reserved",
            )
        if name not in hashes:
            hashes[name] = weights_sha256(src)
        ours = hashes[name]
        if ours != entry.weights_sha256:
            _refuse(
                slots,
                str(src.path),
                f"checkpoint {name!r}: expected the weights reserved for it (sha256 "
                f"{entry.weights_sha256[:16]}...), found sha256 {ours[:16]}...: another "
                "checkpoint of that name; give it its own name, or reserve again in a new store",
                "reused_name",
            )
        if str(g["manifest_json"][entry.slot]) != src.manifest_json:
            state = "complete" if int(g["complete"][entry.slot]) else "reserved"
            _refuse(
                slots,
                str(src.path / "manifest.json"),
                f"checkpoint {name!r}: slot {entry.slot} is {state} with another manifest, "
                "expected the checkpoint that was reserved",
                "reused_name",
            )


def refuse_generate(generate: int, slots: SlotsFile) -> None:
    if generate:
        raise UsageError(
            f"extract --slots-from {slots.source}: --generate: expected 0 (the generated "
            f"sub-store reserves its own slots under a lock), found {generate}"
        )
