"""Future learning: a fixed-budget LoRA adaptation of a checkpoint to a task it never trained on.

Same data, order, seed, learning rate, rank and steps for every checkpoint (recorded in
``protocol``, with hashes of the training order and the held-out items). At every step of
``future_eval_at`` two numbers on the held-out items:

* accuracy of greedy generations (the task's scorer), binomial SE;
* NLL per reference response token, teacher forced (continuous, low variance), SE over items.

Summaries: the final accuracy and NLL; the areas under both curves (trapezoid / step range, in
the curve's units); the steps to reach ``future_nll_threshold`` (linear between evaluated
steps, None when not reached within the budget). SEs: the accuracy AUC is the mean of per-item
AUCs and the NLL AUC a ratio of per-item areas to per-item tokens (analytic, over items); the
steps to the threshold by a bootstrap over items.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from repcollapse.train.config import TARGET_MODULES
from repcollapse.train.eval_config import EvalSettings
from repcollapse.train.hf import load_model, load_tokenizer
from repcollapse.train.pools import encode_sft
from repcollapse.train.teacher import autocast, pad_right, token_stats
from repcollapse.train.uncertainty import (
    bootstrap_se,
    curve_auc,
    mean_se,
    ratio_estimate,
    score_estimate,
    steps_to_threshold,
)

ItemScorer = Callable[[Any, Any, Sequence[dict[str, Any]]], list[float]]
"""(model, tok, eval records) -> per-item generation scores."""


def _sha(xs: Sequence[Any]) -> str:
    return hashlib.sha256(json.dumps(list(xs)).encode()).hexdigest()[:16]


def summarise_curves(
    steps: Sequence[int],
    item_scores: Sequence[Sequence[float]],
    item_nll: Sequence[Sequence[float]],
    item_tokens: Sequence[int],
    threshold: float,
) -> dict[str, Any]:
    """The curve summaries and their SEs from per-step, per-item values.

    ``item_scores[s][i]``: item i's score at ``steps[s]``; ``item_nll[s][i]``: its summed NLL;
    ``item_tokens[i]``: its response tokens (the same at every step).
    """
    n = len(item_tokens)
    acc = [score_estimate(list(row)) for row in item_scores]
    nll = [ratio_estimate(list(row), item_tokens) for row in item_nll]
    acc_auc = mean_se([curve_auc(steps, [row[i] for row in item_scores]) for i in range(n)])
    nll_auc = ratio_estimate(
        [curve_auc(steps, [row[i] for row in item_nll]) for i in range(n)], item_tokens
    )

    def pooled_steps(idx: Sequence[int]) -> float | None:
        t = sum(item_tokens[i] for i in idx)
        if t <= 0:
            return None
        curve = [sum(row[i] for i in idx) / t for row in item_nll]
        return steps_to_threshold(steps, curve, threshold)

    reach = pooled_steps(range(n)) if n else None
    reach_se, reach_defined = bootstrap_se(n, pooled_steps)
    return {
        "final": acc[-1]["value"],
        "final_se": acc[-1]["se"],
        "auc": acc_auc["value"],
        "auc_se": acc_auc["se"],
        "curve": [[s, a["value"], a["se"]] for s, a in zip(steps, acc, strict=True)],
        "nll_final": nll[-1]["value"],
        "nll_final_se": nll[-1]["se"],
        "nll_auc": nll_auc["value"],
        "nll_auc_se": nll_auc["se"],
        "nll_curve": [[s, e["value"], e["se"]] for s, e in zip(steps, nll, strict=True)],
        "steps_to_nll": reach,
        "steps_to_nll_se": reach_se,
        "steps_to_nll_resamples_reached": reach_defined,
        "nll_threshold": threshold,
        "n_eval": n,
        "n_eval_tokens": int(sum(item_tokens)),
    }


def future_adaptation(
    ckpt_dir: str | Path,
    train_records: Sequence[dict[str, Any]],
    eval_records: Sequence[dict[str, Any]],
    s: EvalSettings,
    *,
    seed: int,
    device: str,
    max_length: int,
    item_scores: ItemScorer,
) -> dict[str, Any]:
    """Fixed-budget LoRA adaptation to one future task, measured at ``s.future_eval_at``."""
    from peft import LoraConfig, get_peft_model

    tok = load_tokenizer(ckpt_dir)
    model = load_model(ckpt_dir, device, train=True)
    torch.manual_seed(seed)  # the adapter's random init is part of the fixed protocol
    targets = [m for m in TARGET_MODULES if any(n.endswith(m) for n, _ in model.named_modules())]
    cfg = LoraConfig(
        r=s.future_rank,
        lora_alpha=2 * s.future_rank,
        lora_dropout=0.0,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, cfg)
    kept = [
        (r["id"], e)
        for r, e in (
            (r, encode_sft(tok, r["prompt"], r["response"], max_length)) for r in train_records
        )
        if e
    ]
    if not kept:
        raise ValueError("future task has no usable training example")
    encoded = [e for _, e in kept]
    held = [
        (r, e)
        for r, e in (
            (r, encode_sft(tok, r["prompt"], r["response"], max_length)) for r in eval_records
        )
        if e
    ]
    held_records = [r for r, _ in held]
    held_enc = [e for _, e in held]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s.future_lr)
    rng = random.Random(seed)
    order: list[int] = []
    used: list[str] = []
    steps: list[int] = []
    scores_at: list[list[float]] = []
    nll_at: list[list[float]] = []
    tokens: list[int] = []
    for step in range(s.future_steps + 1):
        if step in s.future_eval_at:
            steps.append(step)
            scores_at.append(item_scores(model, tok, held_records))
            st = token_stats(model, tok, held_enc, device=device)
            nll_at.append(list(st["nll_sum"]))
            tokens = list(st["n_tokens"])
        if step == s.future_steps:
            break
        model.train()
        if len(order) < s.future_batch_size:
            perm = list(range(len(encoded)))
            rng.shuffle(perm)
            order.extend(perm * max(1, s.future_batch_size // len(perm) + 1))
        idx = [order.pop(0) for _ in range(s.future_batch_size)]
        used += [kept[j][0] for j in idx]
        b = pad_right([encoded[j] for j in idx], tok.pad_token_id, device)
        with autocast(device):
            loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    out = summarise_curves(steps, scores_at, nll_at, tokens, s.future_nll_threshold)
    out["protocol"] = {
        "seed": seed,
        "learning_rate": s.future_lr,
        "steps": s.future_steps,
        "eval_at": list(s.future_eval_at),
        "batch_size": s.future_batch_size,
        "rank": s.future_rank,
        "n_train": len(encoded),
        "train_order_sha256": _sha(used),
        "eval_ids_sha256": _sha([r.get("id") for r in held_records]),
    }
    return out
