"""One checkpoint's slot of the store, written completely with the completion mark last: the
unembedding head, the slot, the LoRA factors, the behaviour, then the probe's hidden states and
logit statistics chunk by chunk (used for the probe and for the generated probe's sub-store)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from repcollapse.extract.checkpoints import CheckpointSource, checkpoint_coords
from repcollapse.extract.job import Job, log
from repcollapse.extract.store_io import TOPK
from repcollapse.extract.tokens import TokenPlan
from repcollapse.store_schema.writer import StoreWriter


def write_checkpoint(
    job: Job, writer: StoreWriter, model: Any, src: CheckpointSource, plan: TokenPlan, lora: Any
) -> int:
    """Write one checkpoint's slot completely, the completion mark last; returns tokens."""
    from tqdm.auto import tqdm

    from repcollapse.extract.forward import ChunkBuffer, iterate_outputs
    from repcollapse.extract.logits import LogitStatistics

    config, counter, tokenizer = job.config, job.counter, job.tokenizer
    weight = model.get_output_embeddings().weight.detach().float().cpu().numpy()
    head = writer.add_head(weight)
    counter()
    index = writer.reserve(checkpoint_coords(src, lora, head))
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
    writer.mark_complete(index)
    counter()
    log(
        config,
        f"{src.manifest.name}: {n_tokens} tokens, max |h| {max_abs.max():.0f} (layer {int(max_abs.argmax())})",
    )
    return n_tokens
