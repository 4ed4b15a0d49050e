"""Checkpoints whose weights are the very files of a checkpoint already complete in the store.

`train run --reuse` hard-links a stage that several sequences share (the matched-token control's
and the replay chain's first stage are sequence A's): the same weights and adapter give the
same activations, logit statistics and LoRA factors, so extract copies the twin's stored arrays
into the new slot instead of running the probe again. The copy follows the same protocol as an
extraction (slot reserved, factors, behaviour, every chunk, ``complete`` last), so a killed copy
resumes like a killed extraction. Twins are recognised by ``os.path.samefile`` on every weight
and adapter file (links, not equal contents: hashing 0.5 GB per checkpoint would cost more than
it saves); a stage that was copied rather than linked is extracted normally.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from extract.checkpoints import CheckpointSource, checkpoint_coords
from store_schema import schema as S
from store_schema.store import StoreWriter

if TYPE_CHECKING:
    from extract.run import Job

_WRITTEN_APART = {*S.CHECKPOINT_COORDS, S.COMPLETE.name, "behavior_json", S.HIDDEN.name}
"""Per-checkpoint arrays not copied as a whole: coords (reserve), completion, behaviour (from the
checkpoint's own behavior.json) and hidden (chunk by chunk)."""


def weight_files(src: CheckpointSource) -> list[Path]:
    """The files that determine a merged checkpoint's activations and stored update."""
    files = sorted(src.path.glob("*.safetensors"))
    adapter = src.path / (src.manifest.adapter_dir or "adapter")
    return files + sorted(adapter.glob("*.safetensors")) if files else []


def same_weights(a: CheckpointSource, b: CheckpointSource) -> bool:
    if a.adapters or b.adapters or a.manifest.stage_kind != b.manifest.stage_kind:
        return False
    fa, fb = weight_files(a), weight_files(b)
    return (
        bool(fa)
        and [f.name for f in fa] == [f.name for f in fb]
        and all(os.path.samefile(x, y) for x, y in zip(fa, fb, strict=True))
    )


def find_twin(job: Job, src: CheckpointSource) -> CheckpointSource | None:
    """A checkpoint of this command, complete in the store, with ``src``'s very weight files."""
    for other in job.by_name.values():
        if other is src or job.writer.status(other.manifest.name) != "complete":
            continue
        if same_weights(src, other):
            return other
    return None


def copy_twin(job: Job, src: CheckpointSource, twin: CheckpointSource) -> int:
    """Write ``src`` as a copy of ``twin``'s stored data; returns the token count."""
    g = job.writer.g
    t = job.writer.names().index(twin.manifest.name)
    rank, scaling, head = (g[k][t] for k in ("lora_rank", "lora_scaling", "head"))
    lora = SimpleNamespace(rank=int(rank), scaling=float(scaling)) if int(rank) else None
    coords = checkpoint_coords(src, lora, int(head))
    return copy_slot(job.writer, twin.manifest.name, coords, src.behavior, job.counter)


def copy_slot(
    writer: StoreWriter,
    source: str,
    coords: dict[str, Any],
    behavior: dict[str, Any],
    counter: Callable[[], None] = lambda: None,
) -> int:
    """A new checkpoint ``coords['name']`` whose data are those of the complete checkpoint
    ``source``: reserve, per-checkpoint arrays, behaviour, chunks, ``complete`` last."""
    t = writer.names().index(source)
    index = writer.reserve(coords)
    counter()
    g = writer.g  # reserve may have resized the arrays
    token_arrays = []
    for arr in writer._checkpoint_arrays():
        name = arr.path.rsplit("/", 1)[-1]
        if name in _WRITTEN_APART or name.startswith("behavior__"):
            continue
        if S.TOKEN in (arr.metadata.dimension_names or ()):
            token_arrays.append(name)
            continue
        arr[index] = arr[t]  # LoRA factors and any other per-checkpoint array
        counter()
    writer.write_behavior(index, behavior)
    counter()
    hidden = g[S.HIDDEN.name]
    n_tokens, step = hidden.shape[2], writer.token_chunk
    for t0 in range(0, n_tokens, step):  # chunk by chunk: memory flat in the number of tokens
        writer.write_hidden(index, t0, hidden[t, :, t0 : t0 + step, :])
        counter()
        writer.write_token_vars(index, t0, {k: g[k][t, t0 : t0 + step] for k in token_arrays})
        counter()
    writer.mark_complete(index)
    counter()
    return int(n_tokens)
