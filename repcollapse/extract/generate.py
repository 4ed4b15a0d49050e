"""``--generate N``: sampled completions per probe prompt, stored like the teacher-forced probe.

Each probe prompt (rendered with the chat template and its generation prompt, else
``prompt + "\\n"``) gets N completions sampled at ``gen_temperature`` (pure temperature sampling:
top-k 0, top-p 1, no repetition penalty, whatever the checkpoint's generation_config says) of
at most ``gen_max_new_tokens`` tokens, cut after the first end-of-sequence token. The RNG is
seeded per prompt from (seed, sha256 of the record id), so a prompt's samples do not depend on
the corpus order, and runs are repeatable on one device.

Generated tokens differ per checkpoint, so the generated probe cannot share the token axis of
the root store. Each checkpoint gets its own sub-store ``generated/<name with '/' -> '__'>``:
a full store (same layout and attrs as the root) with one checkpoint, whose tokens are the
prompt tokens (span ``prompt``) and the completion tokens (span ``response``) of every sample,
example ids ``<record id>/s<j>``. The sub-store's ``completions`` attr holds the decoded texts.
The ``generated`` group's attr ``checkpoint_groups`` maps checkpoint name -> sub-group path (set
when the sub-store is complete). An incomplete sub-store is deleted and redone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from repcollapse.extract.store_io import create_or_check, update_attr_dict
from repcollapse.extract.tokens import (
    TokenizedExample,
    TokenPlan,
    assign_splits,
    has_chat_template,
    store_order,
    token_coords,
)
from repcollapse.store_schema.records import ProbeRecord
from repcollapse.store_schema.schema import GENERATED_GROUP, GENERATED_INDEX_ATTR, generated_group
from repcollapse.store_schema.store import store_exists, store_lock
from repcollapse.store_schema.writer import StoreWriter

if TYPE_CHECKING:
    from repcollapse.extract.job import Job


def generated_done(store: Any, name: str) -> bool:
    group = generated_group(name)
    return store_exists(store, group) and StoreWriter(store, group=group).status(name) == "complete"


def _prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    if has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt + "\n")["input_ids"])


def _seed(seed: int, record_id: str) -> int:
    digest = hashlib.sha256(f"{seed}:{record_id}".encode()).hexdigest()
    return int(digest[:15], 16)


def sample_completions(
    model: Any,
    tokenizer: Any,
    records: Sequence[ProbeRecord],
    n: int,
    *,
    seed: int,
    temperature: float,
    max_new_tokens: int,
    max_length: int,
    device: Any,
) -> tuple[list[TokenizedExample], list[dict[str, Any]]]:
    """Generated examples in store order and their decoded completions."""
    import torch

    from repcollapse.extract.forward import autocast_context

    split = assign_splits(records, seed)
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    eos_ids.add(tokenizer.eos_token_id)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    examples, completions = [], []
    for rec in store_order(records):
        prompt = _prompt_ids(tokenizer, rec.prompt)[: max(1, max_length - max_new_tokens)]
        x = torch.tensor([prompt] * n, dtype=torch.long, device=device)
        devices = [device] if device.type == "cuda" else []
        with (
            torch.random.fork_rng(devices=devices),
            torch.inference_mode(),
            autocast_context(device),
        ):
            torch.manual_seed(_seed(seed, rec.id))
            out = model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                do_sample=True,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                repetition_penalty=1.0,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                eos_token_id=sorted(eos_ids),
            )
        for j, row in enumerate(out.cpu().numpy()):
            completion = row[len(prompt) :]
            stops = [i for i, t in enumerate(completion) if int(t) in eos_ids]
            completion = completion[: stops[0] + 1] if stops else completion
            ids = np.concatenate([np.asarray(prompt, np.int64), completion.astype(np.int64)])
            spans = np.array(["prompt"] * len(prompt) + ["response"] * len(completion))
            ex_id = f"{rec.id}/s{j}"
            examples.append(
                TokenizedExample(ex_id, rec.domain, split[rec.id], ids, spans, np.arange(len(ids)))
            )
            completions.append(
                {
                    "example": ex_id,
                    "record": rec.id,
                    "sample": j,
                    "text": tokenizer.decode(completion, skip_special_tokens=True),
                    "n_tokens": len(completion),
                }
            )
    return examples, completions


def run_generated(job: Job, src: Any, model: Any, lora: Any) -> str:
    """Generate, then extract the generated probe of one checkpoint into its sub-store."""
    from repcollapse.extract.slot import write_checkpoint

    cfg = job.config
    name = src.manifest.name
    group = generated_group(name)
    if store_exists(job.store, group):  # incomplete from a killed run: its tokens may differ
        with store_lock(job.store):
            del zarr.open_group(store=str(job.store), mode="r+", zarr_format=3)[group]
    examples, completions = sample_completions(
        model,
        job.tokenizer,
        job.records,
        cfg.generate,
        seed=cfg.seed,
        temperature=cfg.gen_temperature,
        max_new_tokens=cfg.gen_max_new_tokens,
        max_length=cfg.max_length,
        device=job.device,
    )
    plan = TokenPlan(examples, token_coords(examples))
    attrs = {
        **job.attrs,
        "generation": {
            "checkpoint": name,
            "n": cfg.generate,
            "temperature": cfg.gen_temperature,
            "max_new_tokens": cfg.gen_max_new_tokens,
            "seed": cfg.seed,
            "top_k": 0,
            "top_p": 1.0,
        },
        "completions": completions,
    }
    create_or_check(
        job.store,
        group=group,
        geometry=job.geometry,
        coords=plan.coords,
        attrs=attrs,
        token_chunk=cfg.token_chunk,
    )
    writer = StoreWriter(job.store, group=group)
    write_checkpoint(job, writer, model, src, plan, lora)
    update_attr_dict(job.store, GENERATED_GROUP, GENERATED_INDEX_ATTR, name, group)
    return group
