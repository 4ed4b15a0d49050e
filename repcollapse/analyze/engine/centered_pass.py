"""The second, light pass of a moment pass, for centered anisotropy.

Centered anisotropy needs each row normalised after subtracting the mean of the *selection*,
which no per-chunk sum can provide before the mean is known. It is computed exactly by a second
pass over the targets' chunks (``step2``: O(N d) per selection, no d x d products) once the
first pass (``engine.moments``) has fixed every mean (``finish1``); it runs only when a
centered-anisotropy metric is asked for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from repcollapse.analyze.engine.moments import Accumulator, cell_means, gather
from repcollapse.analyze.engine.xp import by_name


def finish1(acc: Accumulator) -> Accumulator:
    """After the first pass: exact cell means and, per cell, the offsets to its selections' means
    (what ``step2`` needs)."""
    cfg, plan = acc.config, acc.plan
    if sorted(acc.chunks_seen) != list(range(len(plan.chunks))):
        raise RuntimeError(
            f"pass over layer {cfg.layer}: chunks {acc.chunks_seen} seen, expected all {len(plan.chunks)}"
        )
    if "centered_unit" not in cfg.needs:
        return acc
    xp = by_name(cfg.xp)
    sels = plan.selections()
    for t in cfg.targets:
        st = acc.states[t]
        mu_cell = cell_means(acc, t)
        n = st.n.astype(np.float64)
        mu_sel = np.stack(
            [(n[c, None] * mu_cell[c]).sum(0) / n[c].sum() for c in map(plan.cells_of, sels)]
        )
        sel_of_cell = np.array(
            [[0, 1 + di, 1 + len(plan.domains) + si] for di, si in plan.cells], np.int64
        )
        delta = mu_sel[sel_of_cell] - mu_cell[:, None, :]  # (C, 3, d)
        acc.mu_cell[t] = xp.asarray(mu_cell.astype(acc.dtype))
        acc.delta[t] = (xp.asarray(delta), xp.asarray(delta.astype(acc.dtype)), sel_of_cell)
        st.cunit = xp.zeros((len(sels), acc.d))
    return acc


def step2(acc: Accumulator, k: int, *blocks: Any) -> Accumulator:
    """Second pass (targets' chunks only): sums of rows centered by each selection's mean and
    normalised, accumulated per selection (all, the row's domain, the row's span)."""
    cfg, d, wd = acc.config, acc.d, acc.dtype
    xp = by_name(cfg.xp)
    cp = acc.plan.chunks[k]
    for t, block in zip(cfg.targets, blocks, strict=True):
        st = acc.states[t]
        buf = gather(xp, block, cp.order, d, wd)
        delta64, delta_w, sel_of_cell = acc.delta[t]
        for ci, a, b in cp.segments:
            seg = buf[a:b]
            seg -= acc.mu_cell[t][ci]
            dc = delta_w[ci].T  # (d, 3): mu_S - mu_cell for S in (all, domain, span)
            sq = xp.einsum("ij,ij->i", seg, seg)
            nrm2 = sq[:, None] - 2.0 * (seg @ dc) + (dc * dc).sum(axis=0)[None, :]
            w = xp.where(nrm2 > 0, 1.0 / xp.sqrt(xp.where(nrm2 > 0, nrm2, 1.0)), 0.0).astype(wd)
            contrib = (seg.T @ w).astype(np.float64) - delta64[ci].T * w.sum(
                axis=0, dtype=np.float64
            )[None, :]
            for j, sel in enumerate(sel_of_cell[ci].tolist()):
                st.cunit[sel] += contrib[:, j]
    return acc
