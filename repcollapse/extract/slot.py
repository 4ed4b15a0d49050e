"""One checkpoint's slot of the store, written completely with the completion mark last: the
unembedding head, the slot, the LoRA factors, the behaviour, then the probe's hidden states and
logit statistics chunk by chunk (used for the probe and for the generated probe's sub-store).

With a slot reserved beforehand (``extract --slots-from``: repcollapse.extract.reserved_slots)
the head and the slot already exist: the head is checked against the reserved one, the slot's
coordinates are written into its own chunks, and the completion mark is set without touching
any shared metadata (no lock, no consolidation: the reservation consolidated the shapes)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from repcollapse.extract.checkpoints import CheckpointSource, checkpoint_coords
from repcollapse.extract.job import Job, log
from repcollapse.extract.store_io import TOPK
from repcollapse.extract.tokens import TokenPlan
from repcollapse.store_schema import schema as S
from repcollapse.store_schema.problems import Problem, SchemaError
from repcollapse.store_schema.protocol import protocol_step
from repcollapse.store_schema.writer import StoreWriter

if TYPE_CHECKING:
    from repcollapse.extract.reserved_slots import ReservedSlot


def write_checkpoint(
    job: Job,
    writer: StoreWriter,
    model: Any,
    src: CheckpointSource,
    plan: TokenPlan,
    lora: Any,
    reserved: ReservedSlot | None = None,
) -> int:
    """Write one checkpoint's slot completely, the completion mark last; returns tokens.

    ``reserved``: the slot and head a coordinator reserved (written without a lock)."""
    from tqdm.auto import tqdm

    from repcollapse.extract.forward import ChunkBuffer, iterate_outputs
    from repcollapse.extract.logits import LogitStatistics

    config, counter, tokenizer = job.config, job.counter, job.tokenizer
    weight = model.get_output_embeddings().weight.detach().float().cpu().numpy()
    if reserved is None:
        head = writer.add_head(weight)
        counter()
        index = writer.reserve(checkpoint_coords(src, lora, head))
    else:
        index = fill_reserved(writer, src, lora, reserved, weight)
    counter()
    if lora is not None:
        for module, (a, b) in lora.factors.items():
            writer.write_lora(index, module, a, b)
            counter()
    writer.write_behavior(index, src.behavior)
    counter()
    hidden = writer.g["hidden"]
    n_layers, n_tokens, n_features = hidden.shape[1:]
    buffer = ChunkBuffer(
        writer,
        index,
        n_layers=n_layers,
        n_features=n_features,
        n_tokens=n_tokens,
        topk=TOPK,
        after_write=counter,
        write_behind=config.write_behind,
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    stats = LogitStatistics(
        model.get_output_embeddings().weight,
        TOPK,
        slice_size=config.logit_slice,
        softcap=getattr(model.config, "final_logit_softcapping", None),
    )
    max_abs = np.zeros(n_layers)
    bar = tqdm(
        total=n_tokens,
        unit="tok",
        unit_scale=True,
        desc=src.manifest.name,
        disable=not config.progress,
        file=sys.stderr,
    )
    for n, out in iterate_outputs(
        model,
        plan.examples,
        batch_size=config.batch_size,
        pad_id=pad_id,
        device=job.device,
        stats=stats,
        hidden_dtype=writer.hidden_dtype,
    ):
        buffer.add(out.hidden, out.stats, out.max_abs)  # refuses |h| the store cannot hold
        max_abs = np.maximum(max_abs, out.max_abs)
        bar.update(n)
    buffer.close()
    bar.close()
    if reserved is None:
        writer.mark_complete(index)
    else:
        mark_reserved_complete(writer, index)
    counter()
    log(
        config,
        f"{src.manifest.name}: {n_tokens} tokens, max |h| {max_abs.max():.0f} (layer {int(max_abs.argmax())})",
    )
    return n_tokens


def fill_reserved(
    writer: StoreWriter, src: CheckpointSource, lora: Any, reserved: ReservedSlot, weight: Any
) -> int:
    """Write the coordinates of a reserved slot (every one but ``name``, which the reservation
    wrote) after checking the model's unembedding is the reserved head; returns the slot."""
    from repcollapse.extract.reserved_slots import head_sha256

    name, index = src.manifest.name, reserved.slot
    if str(writer.g["name"][index]) != name:  # checked before the run; the store may change
        raise SchemaError(
            [
                Problem(
                    f"{writer.url} slot {index}",
                    f"expected {name!r}, found {str(writer.g['name'][index])!r}",
                    "not_reserved",
                )
            ],
            "refusing to write a slot reserved for another checkpoint",
        )
    ours = head_sha256(weight)
    if ours != reserved.head_sha256:
        raise SchemaError(
            [
                Problem(
                    f"{src.path} unembedding",
                    f"expected the head reserved for {name!r} (head {reserved.head}, sha256 "
                    f"{reserved.head_sha256[:16]}...), found sha256 {ours[:16]}...",
                    "not_reserved",
                )
            ],
            "refusing to write a reserved slot",
        )
    writer.write_coords(index, checkpoint_coords(src, lora, reserved.head))
    protocol_step("reserved: coords")
    return index


def mark_reserved_complete(writer: StoreWriter, index: int) -> None:
    """``StoreWriter.mark_complete`` without its consolidation: the reservation already wrote
    the shapes into the consolidated snapshot, and ``complete`` is data, not metadata; a
    rewrite of the root's ``zarr.json`` by several workers at once is what must not happen."""
    writer.record_checksums(index)
    writer.g[S.COMPLETE.name][index] = 1
    protocol_step("complete")
