"""Next-token statistics at T = 1 from the last hidden layer (store_schema.schema.LOGIT_STATS).

Computed in torch on the extraction device, in float32 (autocast off), over slices of at most
``slice_size`` tokens: a slice's logits are ``slice x vocab`` floats, never the whole batch's
``batch x length x vocab``. Logits are recomputed as ``hidden[-1] @ W_U.T`` (plus the model's
final soft-capping, if it has one), the same product analysis can redo from the store.

``logit_support_90`` (smallest k whose top-k probability mass is >= 0.9) needs a sorted
distribution; a full sort of the vocabulary per token would dominate the cost, so the top
``SUPPORT_PROBE`` probabilities are taken first and only rows whose mass stays below 0.9 there
(flat distributions) fall back to a full sort. Cumulative sums are in float64 so the 0.9 cut
agrees with the numpy reference (store_schema.testing._logit_stats).
"""

from __future__ import annotations

import numpy as np
import torch

SUPPORT_MASS = 0.9
SUPPORT_PROBE = 256


def _support(logp: torch.Tensor) -> torch.Tensor:
    """Smallest k with top-k mass >= 0.9 per row of log-probabilities (n, V)."""
    n, vocab = logp.shape
    probe = min(vocab, SUPPORT_PROBE)
    top = torch.topk(logp, probe, dim=1, sorted=True).values.exp().double().cumsum(dim=1)
    reached = top >= SUPPORT_MASS
    # argmax of a boolean row = first True; rows with none reached are redone below.
    out = reached.to(torch.int8).argmax(dim=1) + 1
    flat = ~reached[:, -1]
    if bool(flat.any()):
        rows = torch.sort(logp[flat], dim=1, descending=True).values.exp().double().cumsum(dim=1)
        out[flat] = (rows >= SUPPORT_MASS).to(torch.int8).argmax(dim=1) + 1
    return out.to(torch.int32)


def logit_stats(logits: torch.Tensor, target: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Statistics of one slice: logits (n, V) float32, target (n,) int64 (-1: none)."""
    logits = logits.float()
    logp = torch.log_softmax(logits, dim=1)
    entropy = -(logp.exp() * logp).sum(dim=1)
    top_logp, top_ids = torch.topk(logp, k=max(k, 2), dim=1, sorted=True)
    top_logits = torch.gather(logits, 1, top_ids[:, :2])
    safe = target.clamp(min=0).unsqueeze(1)
    target_lp = torch.gather(logp, 1, safe)[:, 0]
    target_lp = torch.where(target >= 0, target_lp, torch.full_like(target_lp, float("nan")))
    return {
        "logit_entropy": entropy,
        "logit_top1_prob": top_logp[:, 0].exp(),
        "logit_top2_prob": top_logp[:, 1].exp(),
        "logit_margin": top_logits[:, 0] - top_logits[:, 1],
        "logit_target_logprob": target_lp,
        "logit_support_90": _support(logp),
        "logit_argmax_id": top_ids[:, 0].to(torch.int32),
        "topk_ids": top_ids[:, :k].to(torch.int32),
        "topk_logprobs": top_logp[:, :k].to(torch.float16),
    }


_NUMPY_DTYPES = {
    "logit_support_90": np.int32,
    "logit_argmax_id": np.int32,
    "topk_ids": np.int32,
    "topk_logprobs": np.float16,
}


def hidden_logit_stats(
    last_hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    k: int,
    *,
    slice_size: int = 256,
    softcap: float | None = None,
) -> dict[str, np.ndarray]:
    """Statistics for tokens (n, d) of the last hidden layer; numpy arrays in store dtypes."""
    device_type = last_hidden.device.type
    parts: dict[str, list[torch.Tensor]] = {}
    w = weight.float()
    with torch.autocast(device_type=device_type, enabled=False):
        for s in range(0, last_hidden.shape[0], slice_size):
            z = last_hidden[s : s + slice_size].float() @ w.T
            if softcap:
                z = torch.tanh(z / softcap) * softcap
            for name, value in logit_stats(z, target[s : s + slice_size], k).items():
                parts.setdefault(name, []).append(value)
    out = {}
    for name, values in parts.items():
        arr = torch.cat(values).cpu().numpy()
        out[name] = arr.astype(_NUMPY_DTYPES.get(name, np.float32), copy=False)
    return out
