"""Checkpoints whose weights are the very files of a checkpoint already complete in the store.

`train run --reuse` hard-links a stage that several sequences share (the matched-token control's
and the replay chain's first stage are sequence A's): the same weights and adapter give the
same activations, logit statistics and LoRA factors, so extract copies the twin's stored arrays
into the new slot (``StoreWriter.copy_checkpoint``) instead of running the probe again. The copy follows the same protocol as an
extraction (slot reserved, factors, behaviour, every chunk, ``complete`` last), so a killed copy
resumes like a killed extraction. Twins are recognised by ``os.path.samefile`` on every weight
and adapter file (links, not equal contents: hashing 0.5 GB per checkpoint would cost more than
it saves); a stage that was copied rather than linked is extracted normally.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

from repcollapse.extract.checkpoints import CheckpointSource, checkpoint_coords
from repcollapse.store_schema.reader import StoreReader

if TYPE_CHECKING:
    from repcollapse.extract.job import Job


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
    for other in job.by_name.values():  # file identity first: no store read for most
        if (
            other is not src
            and same_weights(src, other)
            and job.writer.status(other.manifest.name) == "complete"
        ):
            return other
    return None


def copy_twin(job: Job, src: CheckpointSource, twin: CheckpointSource) -> int:
    """Write ``src`` as a copy of ``twin``'s stored data; returns the token count."""
    stored = StoreReader(job.writer.url, job.writer.group).checkpoint_values(
        twin.manifest.name, ("lora_rank", "lora_scaling", "head")
    )
    rank, scaling, head = stored["lora_rank"], stored["lora_scaling"], stored["head"]
    lora = SimpleNamespace(rank=int(rank), scaling=float(scaling)) if int(rank) else None
    coords = checkpoint_coords(src, lora, int(head))
    return job.writer.copy_checkpoint(twin.manifest.name, coords, src.behavior, job.counter)
