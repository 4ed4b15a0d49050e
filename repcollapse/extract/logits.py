"""Next-token statistics at T = 1 from the last hidden layer (repcollapse.store_schema.schema.LOGIT_STATS).

Computed in torch on the extraction device, in float32 (autocast off), over slices of at most
``slice_size`` tokens: a slice's logits are ``slice x vocab`` floats, never the whole batch's
``batch x length x vocab``. Logits are recomputed as ``hidden[-1] @ W_U.T`` (plus the model's
final soft-capping, if it has one), the same product analysis can redo from the store.

Cost. On CPU these passes are memory-bound, and a fresh ``slice x vocab`` tensor costs more in
page faults than its arithmetic, so ``LogitStatistics`` keeps two float32 workspaces of that
size and reuses them for every slice (no temporaries of vocabulary size). Per slice: the logits
z (one GEMM, written into the workspace), one sorted top-k (the top-20 ids and logprobs, top-1,
top-2, margin), e = exp(z - max) into the second workspace, s = sum(e), lse = max + log s, and
entropy = log s - sum(e * (z - max)) / s in shifted form, so a near-zero entropy keeps its
precision. No log-softmax of the whole vocabulary is materialised.

``logit_support_90`` (smallest k whose top-k probability mass is >= 0.9) needs the sorted
distribution; a full sort of the vocabulary per token would dominate, so it is read from the
top-32 when that reaches 0.9, and otherwise from a sort of only the entries above a probability
floor whose entries already hold >= 0.9 of the mass (floors 1e-3, 1e-4, 1e-5, then 0.05 / vocab,
below which all entries together hold < 0.05): the top entries that reach 0.9 are all among
those sorted, so this is exact, not an approximation. Cumulative sums are in
float64 so the 0.9 cut agrees with the numpy reference (repcollapse.store_schema.testing._logit_stats).
"""

from __future__ import annotations

import math

import numpy as np
import torch

SUPPORT_MASS = 0.9
SUPPORT_PROBE = 32
"""Size of the one top-k over the vocabulary (>= the stored k = 20)."""
SUPPORT_FLOORS = (1e-3, 1e-4, 1e-5)
"""Probability floors tried, high to low, for rows not at 0.9 within the top-k."""
SUPPORT_FLOOR = 0.05
"""The last floor is SUPPORT_FLOOR / vocab: the entries below it hold < SUPPORT_FLOOR."""
WORKSPACE_ELEMENTS = 1 << 24
"""At most this many floats per workspace (64 MiB): caps the slice for large vocabularies."""

_NUMPY_DTYPES = {
    "logit_support_90": np.int32,
    "logit_argmax_id": np.int32,
    "topk_ids": np.int32,
    "topk_logprobs": np.float16,
}


def _first_reach(sorted_logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, reached) per row of descending log-probabilities: first k with mass >= 0.9."""
    mass = sorted_logp.exp().double().cumsum(dim=1) >= SUPPORT_MASS
    # argmax of a boolean row = its first True
    return mass.to(torch.int8).argmax(dim=1) + 1, mass[:, -1]


def _support(z: torch.Tensor, lse: torch.Tensor, top_z: torch.Tensor) -> torch.Tensor:
    """Smallest k with top-k mass >= 0.9 per row; ``top_z`` a sorted top-k of ``z``."""
    vocab = z.shape[1]
    out, reached = _first_reach(top_z - lse[:, None])
    todo = torch.nonzero(~reached).flatten()
    if not len(todo):
        return out.to(torch.int32)
    # The top entries that reach 0.9 all lie above any floor f whose entries above it already
    # hold >= 0.9 of the mass, so only those are sorted (exact). Floors are tried from high to
    # low (fewest candidates first); at f = 0.05 / V the entries below hold < 0.05 in total,
    # so that last floor always qualifies up to float rounding, and a full sort covers that.
    floors = [f for f in SUPPORT_FLOORS if f > SUPPORT_FLOOR / vocab] + [SUPPORT_FLOOR / vocab]
    for index in todo.tolist():
        row, lse_row = z[index], lse[index]  # a view: no copy of the row
        k = None
        for floor in floors:
            cand = row[row >= lse_row + math.log(floor)] - lse_row
            if len(cand) and float(cand.exp().double().sum()) >= SUPPORT_MASS:
                k, ok = _first_reach(torch.sort(cand, descending=True).values[None])
                k = k if bool(ok[0]) else None
                break
        if k is None:
            k, _ = _first_reach((torch.sort(row, descending=True).values - lse_row)[None])
        out[index] = k[0]
    return out.to(torch.int32)


def _slice_stats(
    z: torch.Tensor, work: torch.Tensor, target: torch.Tensor, k: int
) -> dict[str, torch.Tensor]:
    """Statistics of logits ``z`` (n, V) float32; ``z`` and ``work`` (n, V) are overwritten."""
    vocab = z.shape[1]
    top_z, top_ids = torch.topk(z, min(vocab, max(SUPPORT_PROBE, k, 2)), dim=1, sorted=True)
    target_z = torch.gather(z, 1, target.clamp(min=0).unsqueeze(1))[:, 0]
    m = top_z[:, :1]
    torch.sub(z, m, out=work)
    e = work.exp_()
    s = e.sum(dim=1)
    log_s = s.log()
    lse = top_z[:, 0] + log_s
    support = _support(z, lse, top_z)  # reads z: before z is overwritten below
    y = z.sub_(m)
    ey = y.mul_(e).sum(dim=1)
    entropy = log_s - ey / s
    top_logp = top_z - lse[:, None]
    target_lp = target_z - lse
    target_lp = torch.where(target >= 0, target_lp, torch.full_like(target_lp, float("nan")))
    return {
        "logit_entropy": entropy,
        "logit_top1_prob": top_logp[:, 0].exp(),
        "logit_top2_prob": top_logp[:, 1].exp(),
        "logit_margin": top_z[:, 0] - top_z[:, 1],
        "logit_target_logprob": target_lp,
        "logit_support_90": support,
        "logit_argmax_id": top_ids[:, 0].to(torch.int32),
        "topk_ids": top_ids[:, :k].to(torch.int32),
        "topk_logprobs": top_logp[:, :k].to(torch.float16),
    }


def logit_stats(logits: torch.Tensor, target: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Statistics of logits (n, V) and targets (n,) int64 (-1: none); ``logits`` is unchanged."""
    z = logits.float().clone()
    return _slice_stats(z, torch.empty_like(z), target, k)


class LogitStatistics:
    """Logit statistics of last-layer hidden states, with reusable float32 workspaces."""

    def __init__(
        self,
        weight: torch.Tensor,
        k: int,
        *,
        slice_size: int = 256,
        softcap: float | None = None,
    ) -> None:
        self.weight_t = weight.detach().float().T  # (d, V) view when already float32
        self.k, self.softcap = k, softcap
        vocab = self.weight_t.shape[1]
        self.rows = max(1, min(slice_size, WORKSPACE_ELEMENTS // vocab))
        self._work: tuple[torch.Tensor, torch.Tensor] | None = None

    def _workspaces(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._work is None:
            shape = (self.rows, self.weight_t.shape[1])
            dev = self.weight_t.device
            self._work = (torch.empty(shape, device=dev), torch.empty(shape, device=dev))
        return self._work

    def __call__(self, last_hidden: torch.Tensor, target: torch.Tensor) -> dict[str, np.ndarray]:
        """Statistics for tokens (n, d) and their targets (n,); numpy arrays in store dtypes."""
        parts: dict[str, list[torch.Tensor]] = {}
        zbuf, wbuf = self._workspaces()
        with torch.inference_mode(), torch.autocast(last_hidden.device.type, enabled=False):
            for s in range(0, last_hidden.shape[0], self.rows):
                h = last_hidden[s : s + self.rows].float()
                z, work = zbuf[: h.shape[0]], wbuf[: h.shape[0]]
                torch.matmul(h, self.weight_t, out=z)
                if self.softcap:
                    z.div_(self.softcap).tanh_().mul_(self.softcap)
                for name, value in _slice_stats(z, work, target[s : s + self.rows], self.k).items():
                    parts.setdefault(name, []).append(value)
        out = {}
        for name, values in parts.items():
            arr = torch.cat(values).cpu().numpy()
            out[name] = arr.astype(_NUMPY_DTYPES.get(name, np.float32), copy=False)
        return out


def hidden_logit_stats(
    last_hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    k: int,
    *,
    slice_size: int = 256,
    softcap: float | None = None,
) -> dict[str, np.ndarray]:
    """One-off ``LogitStatistics(weight, k, ...)(last_hidden, target)``."""
    return LogitStatistics(weight, k, slice_size=slice_size, softcap=softcap)(last_hidden, target)
