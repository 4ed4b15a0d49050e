"""Function metrics of the next-token distribution p = softmax(z / T) (definitions: docs/metrics.md).

Tokens: kept tokens (sinks excluded unless asked) that have a next-token target. Per (domain,
span) cell we sum what the metrics need, so every selection is a sum of cells:

- ``entropy``: mean entropy (nats); ``prob_margin``: mean p_(1) - p_(2);
- ``support_90``: mean smallest k whose top-k mass >= 0.9;
- ``nll``: mean -log p(target);
- ``ece``: 15 equal-width confidence bins, bin b = min(floor(15 * p_(1)), 14) (so [b/15,
  (b+1)/15), the last bin closed), ECE = sum_b |sum_{i in b} (correct_i - p_(1),i)| / N with
  correct = argmax == target.

At T = 1 they come from the stored logit statistics. With ``--temperature T`` they are also
recomputed at T from the last hidden layer and the stored ``unembedding`` (logits = h W^T / T),
token block by token block so that tokens x vocab never exists at once; those rows are named
``<metric>@T<T>`` (e.g. ``entropy@T2``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from repcollapse.analyze.engine.tokens import TokenPlan
from repcollapse.analyze.registry import Metric, register

N_BINS = 15
LOGIT_BLOCK_BYTES = 64 << 20
"""Budget for one token block's logits (float64 equivalents): tokens per block = budget / (8 V)."""


@dataclass
class FunctionSums:
    """Per-cell (or, summed, per-selection) sums behind the function metrics."""

    n: np.ndarray
    entropy: np.ndarray
    margin: np.ndarray
    support: np.ndarray
    nll: np.ndarray
    bin_count: np.ndarray
    bin_conf: np.ndarray
    bin_correct: np.ndarray

    @classmethod
    def zeros(cls, n_cells: int) -> FunctionSums:
        z = np.zeros(n_cells)
        b = np.zeros((n_cells, N_BINS))
        return cls(
            np.zeros(n_cells, np.int64), z, z.copy(), z.copy(), z.copy(), b, b.copy(), b.copy()
        )

    def __iadd__(self, other: FunctionSums) -> FunctionSums:
        for name in self.__dataclass_fields__:
            getattr(self, name).__iadd__(getattr(other, name))
        return self

    def select(self, cells: np.ndarray) -> FunctionSums:
        return FunctionSums(
            **{k: getattr(self, k)[cells].sum(axis=0) for k in self.__dataclass_fields__}
        )


def token_sums(
    cell: np.ndarray,
    n_cells: int,
    entropy: np.ndarray,
    top1: np.ndarray,
    top2: np.ndarray,
    support: np.ndarray,
    target_logprob: np.ndarray,
    correct: np.ndarray,
) -> FunctionSums:
    """Per-cell sums from per-token values (all arrays over the same tokens)."""
    out = FunctionSums.zeros(n_cells)

    def add(dst: np.ndarray, v: np.ndarray) -> None:
        dst += np.bincount(cell, weights=np.asarray(v, np.float64), minlength=n_cells)

    out.n += np.bincount(cell, minlength=n_cells)
    add(out.entropy, entropy)
    add(out.margin, np.asarray(top1, np.float64) - np.asarray(top2, np.float64))
    add(out.support, support)
    add(out.nll, -np.asarray(target_logprob, np.float64))
    conf = np.asarray(top1, np.float64)
    b = np.minimum((conf * N_BINS).astype(np.int64), N_BINS - 1)
    flat = cell * N_BINS + b
    size = n_cells * N_BINS
    out.bin_count += np.bincount(flat, minlength=size).reshape(n_cells, N_BINS)
    out.bin_conf += np.bincount(flat, weights=conf, minlength=size).reshape(n_cells, N_BINS)
    out.bin_correct += np.bincount(
        flat, weights=np.asarray(correct, np.float64), minlength=size
    ).reshape(n_cells, N_BINS)
    return out


def sums_from_stats(
    plan: TokenPlan, stats: dict[str, np.ndarray], target_id: np.ndarray
) -> FunctionSums:
    """From the stored T = 1 statistics of one checkpoint (arrays over all tokens)."""
    ok = plan.target_ok
    return token_sums(
        plan.cell_of_token[ok],
        plan.n_cells,
        stats["logit_entropy"][ok],
        stats["logit_top1_prob"][ok],
        stats["logit_top2_prob"][ok],
        stats["logit_support_90"][ok],
        stats["logit_target_logprob"][ok],
        stats["logit_argmax_id"][ok] == target_id[ok],
    )


def logit_stats(z: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of softmax(z) per row (z already divided by T), in z's precision."""
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    p = np.exp(logp)
    ps = -np.sort(-p, axis=1)
    tlp = np.take_along_axis(logp, target[:, None], axis=1)[:, 0]
    return {
        "entropy": -(p * logp).sum(axis=1),
        "top1": ps[:, 0],
        "top2": ps[:, 1] if ps.shape[1] > 1 else np.zeros(len(ps)),
        "support": np.argmax(np.cumsum(ps, axis=1) >= 0.9, axis=1) + 1,
        "target_logprob": tlp,
        "correct": np.argmax(z, axis=1) == target,
    }


def sums_from_hidden(
    block: np.ndarray,
    t0: int,
    plan: TokenPlan,
    unembedding: np.ndarray,
    temperature: float,
    target_id: np.ndarray,
    dtype: type = np.float32,
) -> FunctionSums:
    """Sums at temperature T for tokens [t0, t0 + len) from the last hidden layer's block."""
    h = np.asarray(block).reshape(-1, unembedding.shape[1])
    idx = np.flatnonzero(plan.target_ok[t0 : t0 + len(h)])
    out = FunctionSums.zeros(plan.n_cells)
    step = max(1, LOGIT_BLOCK_BYTES // (8 * unembedding.shape[0]))
    W = unembedding.astype(dtype, copy=False)
    for a in range(0, len(idx), step):
        rows = idx[a : a + step]
        z = (h[rows].astype(dtype) @ W.T) / dtype(temperature)
        s = logit_stats(z, target_id[t0 + rows])
        out += token_sums(
            plan.cell_of_token[t0 + rows],
            plan.n_cells,
            s["entropy"],
            s["top1"],
            s["top2"],
            s["support"],
            s["target_logprob"],
            s["correct"],
        )
    return out


def _mean(field: str):  # noqa: ANN202
    def compute(s: FunctionSums) -> float | None:
        return float(getattr(s, field) / s.n) if s.n else None

    return compute


def ece(s: FunctionSums) -> float | None:
    return float(np.abs(s.bin_correct - s.bin_conf).sum() / s.n) if s.n else None


_F = ("logit_stats",)
register(Metric("entropy", 1, "mean next-token entropy (nats)", "function", _F, _mean("entropy")))
register(
    Metric("prob_margin", 1, "mean top-1 minus top-2 probability", "function", _F, _mean("margin"))
)
register(
    Metric(
        "support_90", 1, "mean smallest k whose top-k mass >= 0.9", "function", _F, _mean("support")
    )
)
register(
    Metric(
        "nll",
        1,
        "mean target negative log-likelihood (teacher forced)",
        "function",
        _F,
        _mean("nll"),
    )
)
register(
    Metric(
        "ece", 1, "expected calibration error, 15 equal-width bins on max-prob", "function", _F, ece
    )
)
