"""A deterministic writer of a small store through the real write protocol, for fault injection.

It does what extract does, in extract's order, without a model: create or check (and repair)
the store, then per checkpoint add the head, reserve, LoRA factors, behaviour, the token chunks
and the completion mark; the third checkpoint is a twin copy (``copy_checkpoint``). Running
it again resumes: complete checkpoints are skipped, an incomplete one is rewritten in its slot.
Only numpy, zarr and store_schema: a forked child starts in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from repcollapse.extract.store_io import Geometry, create_or_check
from repcollapse.store_schema.protocol import KILL_ENV, protocol_step
from repcollapse.store_schema.writer import StoreWriter

N_LAYERS, N_TOKENS, N_FEATURES, VOCAB, CHUNK = 2, 60, 8, 32, 20
NAMES = ("base", "A/01-sft", "B/01-sft")
GEOMETRY = Geometry(
    n_layers=N_LAYERS,
    n_features=N_FEATURES,
    vocab_size=VOCAB,
    n_blocks=1,
    lora_modules={"q_proj": (N_FEATURES, N_FEATURES)},
)


def token_coords() -> dict[str, np.ndarray]:
    position = np.tile(np.arange(10), N_TOKENS // 10).astype(np.int32)
    return {
        "example": np.repeat([f"ex{i}" for i in range(N_TOKENS // 10)], 10),
        "domain": np.repeat(["general", "math"], N_TOKENS // 2),
        "span": np.where(position < 5, "prompt", "response"),
        "position": position,
        "token_id": (np.arange(N_TOKENS) % VOCAB).astype(np.int32),
        "target_id": ((np.arange(N_TOKENS) + 1) % VOCAB).astype(np.int32),
        "split": np.where(np.arange(N_TOKENS) % 20 < 10, "fit", "heldout"),
        "is_sink": position == 0,
    }


ATTRS: dict[str, Any] = {
    "probe_hash": "fault-probe",
    "model_id": "fault",
    "model_family": "fault",
    "tokenizer": {"vocab_sha256": "fault-vocab"},
    "code_version": "test",
    "extraction_config": {"fault": True},
    "store_id": "fault-store",
}


def checkpoint_coords(c: int, head: int) -> dict[str, Any]:
    return {
        "name": NAMES[c],
        "sequence": "" if c == 0 else NAMES[c][0],
        "stage_index": min(c, 1),
        "stage_kind": "base" if c == 0 else "sft",
        "stage_domain": "" if c == 0 else "math",
        "parent": "" if c == 0 else "base",
        "seed": c,
        "tokens_seen": 100 * c,
        "mitigation": "none",
        "lora_rank": 0 if c == 0 else 2,
        "lora_scaling": 0.0 if c == 0 else 2.0,
        "head": head,
        "manifest_json": json.dumps({"name": NAMES[c]}),
        "behavior_json": json.dumps(behavior(c), sort_keys=True),
    }


def behavior(c: int) -> dict[str, float]:
    return {"target_score": 0.5 + 0.1 * c, "val_loss": 2.0 - 0.1 * c}


def _rng(c: int) -> np.random.Generator:
    return np.random.default_rng(int(hashlib.sha256(NAMES[c].encode()).hexdigest()[:8], 16))


def write_chain(store: str | Path) -> None:
    """Write (or resume) the whole store; the same calls extract makes, in its order."""
    create_or_check(
        store,
        group=None,
        geometry=GEOMETRY,
        coords=token_coords(),
        attrs=ATTRS,
        token_chunk=CHUNK,
    )
    w = StoreWriter(store)
    for c, name in enumerate(NAMES):
        if w.status(name) == "complete":
            continue
        if c == 2:  # a twin of A/01-sft: repcollapse.extract.twins copies its stored data
            w.copy_checkpoint(
                NAMES[1], checkpoint_coords(2, 0), behavior(2), lambda: protocol_step("copy")
            )
            continue
        rng = _rng(c)
        head = w.add_head(np.random.default_rng(7).normal(size=(VOCAB, N_FEATURES)))
        index = w.reserve(checkpoint_coords(c, head))
        if c:
            a = rng.normal(size=(1, 2, N_FEATURES)).astype(np.float32)
            b = rng.normal(size=(1, N_FEATURES, 2)).astype(np.float32)
            w.write_lora(index, "q_proj", a, b)
            protocol_step("write: lora")
        w.write_behavior(index, behavior(c))
        protocol_step("write: behavior")
        hidden = rng.normal(size=(N_LAYERS, N_TOKENS, N_FEATURES)).astype(np.float16)
        logits = rng.normal(size=(N_TOKENS, VOCAB))
        for t0 in range(0, N_TOKENS, CHUNK):
            w.write_hidden(index, t0, hidden[:, t0 : t0 + CHUNK])
            protocol_step("write: hidden chunk")
            w.write_token_vars(index, t0, token_vars(logits[t0 : t0 + CHUNK]))
            protocol_step("write: token vars chunk")
        w.mark_complete(index)


def token_vars(logits: np.ndarray) -> dict[str, np.ndarray]:
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    order = np.argsort(-logp, axis=1, kind="stable")
    return {
        "logit_entropy": -(np.exp(logp) * logp).sum(axis=1).astype(np.float32),
        "logit_argmax_id": order[:, 0].astype(np.int32),
        "topk_ids": order[:, :20].astype(np.int32),
        "topk_logprobs": np.take_along_axis(logp, order[:, :20], axis=1).astype(np.float16),
    }


def killed_run(store: str, kill_at: int) -> None:
    """Child process: write with a SIGKILL at protocol step ``kill_at`` (1-based)."""
    os.environ[KILL_ENV] = str(kill_at)
    write_chain(store)
