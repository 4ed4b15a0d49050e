"""Synthetic stores that follow the contract exactly: for tests, the golden store and benchmarks.

The hidden states are random but structured (a per-domain mean, a low-rank component whose rank
shrinks with the stage index, an attention-sink row at position 0), so metrics have something
real to find. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repcollapse.store_schema.records import DOMAINS
from repcollapse.store_schema.store import StoreLayout, create_store
from repcollapse.store_schema.writer import StoreWriter


@dataclass(frozen=True)
class SyntheticSpec:
    n_checkpoints: int = 3
    n_layers: int = 4
    n_tokens: int = 600
    n_features: int = 16
    vocab_size: int = 50
    topk: int = 5
    tokens_per_example: int = 20
    lora_modules: tuple[str, ...] = ("q_proj", "v_proj")
    lora_rank: int = 4
    token_chunk: int = 256
    seed: int = 0
    hidden_dtype: str = "float16"
    """The store's hidden dtype; the values are float16-rounded either way (so a float32 store
    of the same spec holds the same numbers)."""
    codec: str = "lossless"
    """The store's codec of ``hidden`` (store_schema.codecs)."""

    def __post_init__(self) -> None:
        if self.n_tokens % self.tokens_per_example:
            raise ValueError(
                f"SyntheticSpec.n_tokens: expected a multiple of tokens_per_example="
                f"{self.tokens_per_example}, found {self.n_tokens}"
            )


def synthetic_token_coords(spec: SyntheticSpec) -> dict[str, np.ndarray]:
    """Tokens in store order (domain, example, position)."""
    rng = np.random.default_rng(spec.seed)
    n_ex = spec.n_tokens // spec.tokens_per_example
    L = spec.tokens_per_example
    ex_domain = np.array([DOMAINS[i * len(DOMAINS) // n_ex] for i in range(n_ex)])
    position = np.tile(np.arange(L), n_ex)
    span_of_pos = np.array(
        ["prompt"] * (L // 3)
        + ["early_response"] * (L // 3)
        + ["late_response"] * (L - 2 * (L // 3))
    )
    span = np.tile(span_of_pos, n_ex)
    domain = np.repeat(ex_domain, L)
    # finer spans for the domains that have them
    span = np.where((domain == "long_cot") & (span == "early_response"), "cot", span)
    span = np.where((domain == "safety") & (span == "late_response"), "refusal", span)
    token_id = rng.integers(1, spec.vocab_size, size=spec.n_tokens).astype(np.int32)
    target = np.roll(token_id, -1)
    target[position == L - 1] = -1
    ex_ids = np.repeat(np.array([f"probe-{d}-{i:04d}" for i, d in enumerate(ex_domain)]), L)
    split = np.repeat(np.where(np.arange(n_ex) % 4 == 0, "heldout", "fit"), L)
    return {
        "example": ex_ids,
        "domain": domain,
        "span": span,
        "position": position.astype(np.int32),
        "token_id": token_id,
        "target_id": target.astype(np.int32),
        "split": split,
        "is_sink": position == 0,
    }


def synthetic_hidden(
    spec: SyntheticSpec, coords: dict[str, np.ndarray], stage: int, layer: int
) -> np.ndarray:
    """(n_tokens, d) states: domain mean + a low-rank part whose rank shrinks with the stage."""
    rng = np.random.default_rng([spec.seed, stage, layer])
    d, N = spec.n_features, spec.n_tokens
    dom_idx = np.searchsorted(np.array(DOMAINS), coords["domain"], sorter=np.argsort(DOMAINS))
    means = np.random.default_rng([spec.seed, 99, layer]).normal(0, 2, size=(len(DOMAINS), d))
    rank = max(1, d - 3 * stage)
    basis = rng.normal(size=(rank, d))
    h = (
        means[dom_idx]
        + rng.normal(size=(N, rank)) @ basis / np.sqrt(rank)
        + 0.05 * rng.normal(size=(N, d))
    )
    h[coords["is_sink"]] *= 40.0  # attention sink: huge norm
    return h.astype(np.float16)


def make_synthetic_store(
    url: str | Path,
    spec: SyntheticSpec = SyntheticSpec(),
    *,
    complete: Sequence[bool] | None = None,
    names: Sequence[str] | None = None,
    sequence: str = "A",
    mitigation: str = "none",
) -> dict[str, np.ndarray]:
    """Write a contract-conforming store; returns the token coords. ``complete[i]`` False leaves
    checkpoint i written but not marked complete. ``names``: the checkpoints' names (default
    'base', 'A/01-stage', ...), each the parent of the next; ``sequence`` and ``mitigation``
    the stages' coordinates."""
    if names is None:
        names = ["base", *(f"A/{c:02d}-stage" for c in range(1, spec.n_checkpoints))]
        names = names[: spec.n_checkpoints]  # an empty store has no base either
    if len(names) != spec.n_checkpoints:
        raise ValueError(
            f"make_synthetic_store names: expected {spec.n_checkpoints} (n_checkpoints), "
            f"found {len(names)}"
        )
    coords = synthetic_token_coords(spec)
    blocks = spec.n_layers - 1
    layout = StoreLayout(
        n_layers=spec.n_layers,
        n_features=spec.n_features,
        n_tokens=spec.n_tokens,
        vocab_size=spec.vocab_size,
        topk=spec.topk,
        n_blocks=blocks,
        lora_modules={m: (spec.n_features, spec.n_features) for m in spec.lora_modules},
        lora_rank_capacity=max(8, spec.lora_rank),
        token_chunk=spec.token_chunk,
        hidden_dtype=spec.hidden_dtype,
        codec=spec.codec,
    )
    attrs = {
        "probe_hash": "synthetic",
        "model_id": "synthetic",
        "model_family": "synthetic",
        "tokenizer": "synthetic",
        "code_version": "test",
        "extraction_config": {"synthetic": True},
    }
    create_store(url, layout, coords, attrs)
    w = StoreWriter(url)
    rng = np.random.default_rng(spec.seed + 1)
    head = w.add_head(rng.normal(size=(spec.vocab_size, spec.n_features)))
    for c in range(spec.n_checkpoints):
        idx = w.reserve(
            {
                "name": names[c],
                "sequence": "" if c == 0 else sequence,
                "stage_index": c,
                "stage_kind": "base" if c == 0 else "sft",
                "stage_domain": "" if c == 0 else DOMAINS[c % 6],
                "parent": "" if c == 0 else names[c - 1],
                "seed": 0,
                "tokens_seen": 1000 * c,
                "mitigation": "none" if c == 0 else mitigation,
                "lora_rank": 0 if c == 0 else spec.lora_rank,
                "lora_scaling": 0.0 if c == 0 else 2.0,
                "head": head,
                "manifest_json": "{}",
                "behavior_json": "{}",
            }
        )
        layers = np.stack(
            [synthetic_hidden(spec, coords, c, layer) for layer in range(spec.n_layers)]
        )
        for t0 in range(0, spec.n_tokens, spec.token_chunk):
            w.write_hidden(idx, t0, layers[:, t0 : t0 + spec.token_chunk])
        logits = rng.normal(size=(spec.n_tokens, spec.vocab_size)) * (1 + c)
        w.write_token_vars(idx, 0, _logit_stats(logits, coords["target_id"], spec.topk))
        if c > 0:
            for m in spec.lora_modules:
                a = rng.normal(size=(blocks, spec.lora_rank, spec.n_features)).astype(np.float32)
                b = rng.normal(size=(blocks, spec.n_features, spec.lora_rank)).astype(np.float32)
                w.write_lora(idx, m, a, b)
        w.write_behavior(
            idx, {"target_score": 0.5 + 0.1 * c, "future_score": 0.7 - 0.05 * c, "val_loss": 2.0}
        )
        if complete is None or complete[c]:
            w.mark_complete(idx)
    return coords


def _logit_stats(logits: np.ndarray, target: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Reference implementation of the stored logit statistics (numpy, float64)."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    p = np.exp(logp)
    order = np.argsort(-logp, axis=1, kind="stable")
    ps = np.take_along_axis(p, order, axis=1)
    ls = np.take_along_axis(logits, order, axis=1)
    safe_t = np.where(target >= 0, target, 0)
    tlp = np.take_along_axis(logp, safe_t[:, None], axis=1)[:, 0]
    return {
        "logit_entropy": -(p * logp).sum(axis=1).astype(np.float32),
        "logit_top1_prob": ps[:, 0].astype(np.float32),
        "logit_top2_prob": ps[:, 1].astype(np.float32),
        "logit_margin": (ls[:, 0] - ls[:, 1]).astype(np.float32),
        "logit_target_logprob": np.where(target >= 0, tlp, np.nan).astype(np.float32),
        "logit_support_90": (np.argmax(np.cumsum(ps, axis=1) >= 0.9, axis=1) + 1).astype(np.int32),
        "logit_argmax_id": order[:, 0].astype(np.int32),
        "topk_ids": order[:, :k].astype(np.int32),
        "topk_logprobs": np.take_along_axis(logp, order[:, :k], axis=1).astype(np.float16),
    }


__all__ = [
    "SyntheticSpec",
    "make_synthetic_store",
    "synthetic_hidden",
    "synthetic_token_coords",
]
