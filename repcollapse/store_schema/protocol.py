"""The store's write protocol: its steps, how a reader counts slots, and the repair of orphans.

docs/store.md ("Write protocol") states the protocol and what a kill at each step leaves. In
short: a checkpoint's slot belongs to it once its ``name`` is written, which is the last step
of a reservation (every other checkpoint array is resized first, ``name`` last). So

- the slot count readers trust is the length of the shortest checkpoint array (``name``),
  less any trailing slots whose name is still empty (``committed_slots``);
- anything beyond that count is an orphan of a killed reservation: no process owns it (a
  reservation holds the store lock until the name is written, and a name is never emptied),
  so ``repair_slots`` may cut it off under the lock without touching a slot another live
  process is filling.

``protocol_step`` is called after every step (creation, each resize, the coordinates, the
name, each chunk write, the completion mark): tests observe it, and ``KILL_ENV`` makes the
n-th step SIGKILL the process, to prove every crash point is resumable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

import numpy as np
import zarr

from repcollapse.store_schema import schema as S
from repcollapse.store_schema.labels import is_byte_dim
from repcollapse.store_schema.problems import Problem

KILL_ENV = "REPCOLLAPSE_EXTRACT_KILL_AT"
"""Tests only: ``n`` SIGKILLs the process right after its n-th protocol step (1-based)."""

_steps = 0
_steps_lock = threading.Lock()  # ChunkBuffer writes from a thread: keep the count exact
_observers: list[Callable[[str], None]] = []


def protocol_step(label: str) -> None:
    """One step of the write protocol is done (``label`` says which); see the module doc."""
    global _steps
    with _steps_lock:
        _steps += 1
        n = _steps
    for observe in list(_observers):
        observe(label)
    kill_at = os.environ.get(KILL_ENV, "").strip()
    if kill_at and int(kill_at) == n:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def observe_steps(observer: Callable[[str], None]) -> Iterator[None]:
    """Call ``observer(label)`` after every protocol step of this process while inside."""
    _observers.append(observer)
    try:
        yield
    finally:
        _observers.remove(observer)


def array_name(arr: zarr.Array) -> str:
    return arr.path.rsplit("/", 1)[-1]


def checkpoint_arrays(g: zarr.Group) -> list[zarr.Array]:
    """Every array with a leading ``checkpoint`` dim, sorted by name with ``name`` last.

    ``name`` last is the protocol: a reservation resizes in this order, so ``name`` is never
    longer than any other checkpoint array.
    """
    arrays = [
        arr
        for _, arr in g.arrays()
        if arr.metadata.dimension_names and arr.metadata.dimension_names[0] == S.CHECKPOINT
    ]
    return sorted(arrays, key=lambda a: (array_name(a) == "name", array_name(a)))


def committed_slots(g: zarr.Group, arrays: list[zarr.Array] | None = None) -> int:
    """Slots that belong to a checkpoint: the shortest checkpoint array's length, less trailing
    slots whose name is empty (a reservation killed after resizing ``name``, before writing it).
    """
    arrays = checkpoint_arrays(g) if arrays is None else arrays
    if not arrays:
        return 0
    n = min(arr.shape[0] for arr in arrays)
    if n == 0:
        return 0
    names = np.asarray(g["name"][:n])
    while n and str(names[n - 1]) == "":
        n -= 1
    return n


def orphan_problems(g: zarr.Group) -> list[Problem]:
    """The orphan tail of a killed reservation or head write, as validation problems."""
    arrays = checkpoint_arrays(g)
    n = committed_slots(g, arrays)
    longer = sorted({arr.shape[0] for arr in arrays if arr.shape[0] > n})
    problems = []
    if longer:
        problems.append(
            Problem(
                f"checkpoint slot {n}",
                f"expected {n} slot(s) (the checkpoints with a name), found checkpoint arrays of "
                f"length {longer[-1]}: a slot reservation was interrupted; re-run extract (it "
                f"repairs the store first) or StoreWriter(store).repair()",
                "orphan_slot",
            )
        )
    if "unembedding" in g:
        heads = len(g.attrs.get("head_hashes", []) or [])
        rows = g["unembedding"].shape[0]
        if rows > heads:
            problems.append(
                Problem(
                    "unembedding: head",
                    f"expected {heads} head(s) (attrs.head_hashes), found {rows}: a head write was "
                    f"interrupted; re-run extract or StoreWriter(store).repair()",
                    "orphan_head",
                )
            )
    return problems


def repair_slots(g: zarr.Group) -> list[str]:
    """Cut off the orphan tail (checkpoint slots without a name, unembedding rows without a
    recorded hash); returns what was cut. Idempotent: a kill half-way leaves a shorter orphan
    that the next call cuts. The caller holds the store lock."""
    arrays = checkpoint_arrays(g)
    n = committed_slots(g, arrays)
    done = []
    # `name` first: it is the length readers trust, so it should shrink before anything else.
    for arr in sorted(arrays, key=lambda a: array_name(a) != "name"):
        if arr.shape[0] > n:
            done.append(f"{array_name(arr)}: {arr.shape[0]} -> {n} slots")
            arr.resize((n, *arr.shape[1:]))
            protocol_step(f"repair: shrink {array_name(arr)}")
    if "unembedding" in g:
        heads = len(g.attrs.get("head_hashes", []) or [])
        arr = g["unembedding"]
        if arr.shape[0] > heads:
            done.append(f"unembedding: {arr.shape[0]} -> {heads} heads")
            arr.resize((heads, *arr.shape[1:]))
            protocol_step("repair: shrink unembedding")
    return done


_KNOWN_DIMS = {
    S.CHECKPOINT,
    S.LAYER,
    S.TOKEN,
    S.FEATURE,
    S.K,
    S.HEAD,
    S.VOCAB,
    S.BLOCK,
    S.RANK,
}


def looks_unfinished(g: zarr.Group) -> bool:
    """A group a killed creation left: no attributes yet (they are written last) and nothing
    but arrays on the store's dims. Anything else is someone's data and is never overwritten."""
    if dict(g.attrs):
        return False
    for _, node in g.members():
        if not isinstance(node, zarr.Array):
            return False
        for dim in node.metadata.dimension_names or (None,):
            known = dim in _KNOWN_DIMS or is_byte_dim(str(dim))
            if not known and not str(dim).startswith(("lora_in__", "lora_out__")):
                return False
    return True
