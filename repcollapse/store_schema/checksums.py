"""Per-checkpoint checksums: one sha256 per (variable, chunk) of a checkpoint's slot.

The writer hashes every chunk it writes (in memory, from the values it hands to zarr) and
records the lot in the slot's ``checksums_json`` just before ``complete``. Per slot, not one root
attribute: several processes extract different checkpoints into one store at the same time, and
each slot is written by one process only. A resumed extraction rewrites every chunk of its
incomplete slot, so the in-memory hashes of that process cover the slot; anything the process did
not write itself (checkpoint coordinates, LoRA factors of a checkpoint without LoRA, a twin's
copied factors) is hashed from the store at completion.

Hashes are of decoded values (the array's dtype, C order), not of the encoded chunk files, so
they do not depend on the codec, and a deleted chunk file (read back as the fill value) or garbled
bytes (decoded to other values, or failing to decode) both show as a mismatch.
``verify_checkpoints`` is the one check both ``store validate`` and analysis use.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import zarr
from zarr.core.sync import sync

from repcollapse.store_schema import schema as S
from repcollapse.store_schema.problems import Problem, SchemaError

ALGORITHM = "sha256"
NOT_HASHED = {S.COMPLETE.name, S.CHECKSUMS.name}
"""Checkpoint-dim arrays outside the checksums: the mark written after them, and themselves."""


def digest(values: np.ndarray) -> str:
    """sha256 of an array's values: raw bytes in C order, or NUL-joined UTF-8 for strings."""
    values = np.asarray(values)
    if values.dtype.kind in ("T", "U", "O", "S"):
        data = "\x00".join(str(x) for x in values.ravel()).encode()
        return hashlib.sha256(data).hexdigest()
    # hashlib reads the buffer without a copy (and releases the GIL on large buffers, so the
    # write-behind thread hashes while the next forward runs).
    return hashlib.sha256(memoryview(np.ascontiguousarray(values)).cast("B")).hexdigest()


def chunk_key(idx: Sequence[int]) -> str:
    """Chunk indices of the dims after ``checkpoint``, '.'-joined ('' for a per-checkpoint scalar)."""
    return ".".join(str(i) for i in idx)


def _slot_grid(arr: zarr.Array) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(shape, chunks) of one checkpoint's slot: the dims after ``checkpoint``."""
    return tuple(arr.shape[1:]), tuple(arr.chunks[1:])


def _chunk_slices(
    shape: Sequence[int], chunks: Sequence[int], idx: Sequence[int]
) -> tuple[slice, ...]:
    return tuple(
        slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(idx, chunks, shape, strict=True)
    )


def slot_chunks(arr: zarr.Array) -> Iterator[tuple[str, tuple[slice, ...]]]:
    """(key, region) of every chunk of one slot of ``arr``."""
    shape, chunks = _slot_grid(arr)
    counts = [-(-n // c) if n else 0 for n, c in zip(shape, chunks, strict=True)]
    for idx in itertools.product(*(range(k) for k in counts)):
        yield chunk_key(idx), _chunk_slices(shape, chunks, idx)


def block_digests(
    shape: Sequence[int], chunks: Sequence[int], start: Sequence[int], values: np.ndarray
) -> dict[str, str | None]:
    """Hashes of the chunks a block written at ``start`` (slot coordinates) touches.

    A chunk the block covers only in part maps to None: its content depends on other writes,
    so it is hashed from the store at completion instead.
    """
    ranges = []
    for s, n, c in zip(start, values.shape, chunks, strict=True):
        ranges.append(range(s // c, (s + n - 1) // c + 1) if n else range(0))
    out: dict[str, str | None] = {}
    for idx in itertools.product(*ranges):
        region = _chunk_slices(shape, chunks, idx)
        covered = all(
            r.start >= s and r.stop <= s + n
            for r, s, n in zip(region, start, values.shape, strict=True)
        )
        local = tuple(slice(r.start - s, r.stop - s) for r, s in zip(region, start, strict=True))
        out[chunk_key(idx)] = digest(values[local]) if covered else None
    return out


class ChecksumLog:
    """The writer's in-memory hashes: slot index -> variable -> chunk key -> sha256."""

    def __init__(self) -> None:
        self._sums: dict[int, dict[str, dict[str, str]]] = {}
        self._lock = threading.Lock()  # the write-behind thread records too

    def add(self, index: int, arr: zarr.Array, start: Sequence[int], values: np.ndarray) -> None:
        name = arr.path.rsplit("/", 1)[-1]
        shape, chunks = _slot_grid(arr)
        found = block_digests(shape, chunks, start, values)
        with self._lock:
            sums = self._sums.setdefault(index, {}).setdefault(name, {})
            for key, value in found.items():
                if value is None:
                    sums.pop(key, None)
                else:
                    sums[key] = value

    def pop(self, index: int) -> dict[str, dict[str, str]]:
        with self._lock:
            return self._sums.pop(index, {})


def hashed_arrays(g: zarr.Group) -> list[zarr.Array]:
    """Every array with a leading ``checkpoint`` dim, except ``complete`` and ``checksums_json``."""
    return [
        arr
        for name, arr in sorted(g.arrays())
        if arr.metadata.dimension_names
        and arr.metadata.dimension_names[0] == S.CHECKPOINT
        and name not in NOT_HASHED
    ]


def slot_record(g: zarr.Group, index: int, known: Mapping[str, Mapping[str, str]]) -> str:
    """The ``checksums_json`` of slot ``index``: ``known`` hashes, the rest read from the store."""
    chunks: dict[str, dict[str, str]] = {}
    for arr in hashed_arrays(g):
        name = arr.path.rsplit("/", 1)[-1]
        have = known.get(name, {})
        chunks[name] = {
            key: have.get(key) or digest(arr[(index, *region)]) for key, region in slot_chunks(arr)
        }
    return json.dumps({"algorithm": ALGORITHM, "chunks": chunks}, sort_keys=True)


def _fill_digest(arr: zarr.Array, region: tuple[slice, ...]) -> str:
    shape = tuple(r.stop - r.start for r in region)
    fill = arr.metadata.fill_value
    return digest(np.full(shape, fill, dtype=arr.dtype))


def _chunk_file_exists(arr: zarr.Array, index: int, key: str) -> bool:
    idx = (index, *(int(i) for i in key.split(".") if i != ""))
    path = f"{arr.path}/{arr.metadata.encode_chunk_key(idx)}"
    return bool(sync(arr.store_path.store.exists(path)))


def verify_slot(
    g: zarr.Group,
    index: int,
    name: str,
    *,
    values: bool = True,
    layers: Sequence[int] | None = None,
) -> tuple[list[Problem], bool]:
    """Problems of one complete checkpoint's data against its checksums; (problems, recorded).

    ``values=False`` (``store validate --quick``) reads no chunk: it checks that every chunk has
    a recorded checksum and that every chunk file whose checksum is not the fill value's exists.
    ``layers`` limits the ``hidden`` chunks checked (analysis checks the layers it computes).
    """
    where = f"checkpoint {name!r}"
    raw = str(g[S.CHECKSUMS.name][index]) if S.CHECKSUMS.name in g else ""
    if not raw:
        return [], False
    try:
        record = json.loads(raw)
        chunks = record["chunks"]
        if record.get("algorithm") != ALGORITHM:
            raise ValueError(f"algorithm {record.get('algorithm')!r}")
    except (ValueError, KeyError, TypeError) as e:
        msg = f"expected a JSON object with algorithm {ALGORITHM!r} and chunks, found {e}"
        return [Problem(f"{where} {S.CHECKSUMS.name}", msg, "bad_checksums")], True
    problems: list[Problem] = []
    layer_set = None if layers is None else set(layers)
    for arr in hashed_arrays(g):
        var = arr.path.rsplit("/", 1)[-1]
        sums = chunks.get(var)
        if sums is None:
            msg = "expected a checksum per chunk, found none for this variable"
            problems.append(Problem(f"{where} variable {var}", msg, "missing_checksum"))
            continue
        for key, region in slot_chunks(arr):
            skip_layer = layer_set is not None and var == S.HIDDEN.name
            if skip_layer and int(key.split(".")[0]) not in layer_set:
                continue
            loc = f"{where} variable {var} chunk {key or '0'}"
            expected = sums.get(key)
            if expected is None:
                problems.append(Problem(loc, "expected a checksum, found none", "missing_checksum"))
                continue
            problem = _check_chunk(arr, index, key, region, expected, values)
            if problem is not None:
                problems.append(Problem(loc, problem[0], problem[1]))
    return problems, True


def _check_chunk(
    arr: zarr.Array, index: int, key: str, region: tuple[slice, ...], expected: str, values: bool
) -> tuple[str, str] | None:
    """(message, kind) if the chunk does not match its checksum, else None."""
    if not values:
        # zarr does not write a chunk equal to the fill value: absent is then correct.
        if not _chunk_file_exists(arr, index, key) and expected != _fill_digest(arr, region):
            return "expected a chunk file, found none (deleted?)", "missing_chunk"
        return None
    try:
        block = np.asarray(arr[(index, *region)])
    except Exception as e:  # noqa: BLE001 - any decode failure means the bytes are damaged
        return f"expected a readable chunk, found {type(e).__name__}: {e}", "unreadable_chunk"
    found = digest(block)
    if found == expected:
        return None
    if found == _fill_digest(arr, region) and not _chunk_file_exists(arr, index, key):
        return (
            f"expected {ALGORITHM} {expected[:12]}..., found no chunk file (reads as the fill "
            "value: deleted?)",
            "missing_chunk",
        )
    return f"expected {ALGORITHM} {expected[:12]}..., found {found[:12]}...", "checksum_mismatch"


def verify_heads(g: zarr.Group, heads: Sequence[int]) -> list[Problem]:
    """The unembedding rows ``heads`` against the root attribute ``head_hashes``."""
    hashes = list(g.attrs.get("head_hashes", []))
    problems = []
    for h in sorted(set(heads)):
        if h < 0 or h >= len(hashes) or S.UNEMBEDDING.name not in g:
            continue  # validate's shape checks report a missing head
        try:
            found = digest(np.asarray(g[S.UNEMBEDDING.name][h]))
        except Exception as e:  # noqa: BLE001
            found = f"unreadable ({type(e).__name__})"
        if found != hashes[h]:
            problems.append(
                Problem(
                    f"{S.UNEMBEDDING.name}[head={h}]",
                    f"expected {ALGORITHM} {hashes[h][:12]}... (attrs.head_hashes), found {found[:12]}...",
                    "checksum_mismatch",
                )
            )
    return problems


def verify_checkpoints(
    url: str | Path,
    layers_by_checkpoint: Mapping[str, Sequence[int] | None],
    *,
    group: str | None = None,
) -> tuple[list[Problem], list[str]]:
    """(problems, names without checksums) of the listed checkpoints, by name.

    What analysis calls before computing: ``layers_by_checkpoint`` maps a checkpoint to the
    hidden layers it will read (None: all); its token variables, LoRA factors, behaviour and
    unembedding head are always checked.
    """
    from repcollapse.store_schema.store import _open_group

    g = _open_group(url, group, "r")
    names = [str(x) for x in g["name"][:]]
    heads = np.asarray(g["head"][:])
    problems: list[Problem] = []
    unrecorded: list[str] = []
    used_heads = []
    for name, layers in layers_by_checkpoint.items():
        index = names.index(name)
        found, recorded = verify_slot(g, index, name, layers=layers)
        problems += found
        if not recorded:
            unrecorded.append(name)
        used_heads.append(int(heads[index]))
    problems += verify_heads(g, used_heads)
    return problems, unrecorded


def hidden_digests(
    url: str | Path, slots: Mapping[str, int], *, group: str | None = None
) -> dict[tuple[int, str], str]:
    """The recorded sha256 of every ``hidden`` chunk of the named slots: (slot, chunk key) ->
    digest. Analysis checks each block against its own as it reads it (``check_block``), so
    verifying ``hidden`` costs a hash of what is read anyway, not a second read of the store.
    Slots without checksums (written before they existed) contribute nothing."""
    from repcollapse.store_schema.store import _open_group

    g = _open_group(url, group, "r")
    if S.CHECKSUMS.name not in g:
        return {}
    out: dict[tuple[int, str], str] = {}
    for index in slots.values():
        raw = str(g[S.CHECKSUMS.name][index])
        if raw:
            sums = json.loads(raw)["chunks"].get(S.HIDDEN.name, {})
            out.update({(index, key): value for key, value in sums.items()})
    return out


def check_block(expected: str | None, block: np.ndarray, name: str, key: str, store: str) -> None:
    """Raise SchemaError if a ``hidden`` block read for analysis does not match its checksum."""
    if expected is None:
        return
    found = digest(block)
    if found == expected:
        return
    what = f"{ALGORITHM} {found[:12]}..."
    if block.dtype.kind == "f" and np.isnan(block).all():
        what += " (the fill value: chunk file deleted?)"
    problem = Problem(
        f"checkpoint {name!r} variable {S.HIDDEN.name} chunk {key}",
        f"expected {ALGORITHM} {expected[:12]}..., found {what}",
        "checksum_mismatch",
    )
    raise SchemaError(
        [problem],
        f"refusing to analyse checkpoint {name!r} of {store}: stored data do not match the "
        "checksums recorded at extraction (re-extract it into a new store, or pass "
        "--checkpoints without it)",
    )


def as_problems(unrecorded: Sequence[str]) -> list[Problem]:
    """The warning for checkpoints written before checksums existed."""
    return [
        Problem(
            f"checkpoint {n!r}",
            "no checksums recorded (written before checksums existed): its values cannot be "
            "checked against what extraction wrote",
            "no_checksums",
        )
        for n in unrecorded
    ]
