"""Effective rank of eigenvalue spectra, and the per-sequence effective rank that the pass folds
in chunk by chunk (``fold_sequences``: each example's centered token matrix, and its tokens in
each span, from token-space Grams; examples that straddle chunks are carried to the next step in
``st.pending``).

An example (or its tokens in one span) whose tokens all have the same hidden state has a zero
centered token matrix and no effective rank (0 / 0): it is left out of the mean and counted in
``st.seq_skip`` instead, in both precision modes. The test is exact equality of the rows (the
same stored values give the same shifted rows in either mode), never a threshold on round-off:
centering identical rows leaves 0 in one mode and a last-bit residue (erank 1) in the other.
Examples (or span subsets) with fewer than 2 kept tokens are neither averaged nor counted."""

from __future__ import annotations

from typing import Any

import numpy as np

from repcollapse.analyze.engine.xp import by_name, to_numpy


def erank_of(eigs: Any, axis: int = -1) -> Any:
    """exp(entropy) of eigenvalues normalised to sum 1 (0 log 0 = 0); NaN where all zero."""
    xp = by_name("cupy") if type(eigs).__module__.startswith("cupy") else np
    lam = xp.clip(eigs, 0.0, None)
    tot = lam.sum(axis=axis, keepdims=True)
    p = lam / xp.where(tot > 0, tot, 1.0)
    ent = -(xp.where(p > 0, p * xp.log(xp.where(p > 0, p, 1.0)), 0.0)).sum(axis=axis)
    return xp.where(tot[..., 0] > 0, xp.exp(ent), xp.nan)


def _identical(x: Any, xp: Any) -> np.ndarray:
    """(m,) whether every row of each (m, L, d) stack equals its first row, exactly."""
    return to_numpy(xp.all(x == x[:, :1], axis=(1, 2))).astype(bool)


def _add(st: Any, domain: np.ndarray, col: Any, e: np.ndarray, same: np.ndarray) -> None:
    """Fold effective ranks ``e`` into the sums; rows in ``same`` (identical tokens) are only
    counted as skipped."""
    col, ok = np.broadcast_to(col, domain.shape), ~same
    np.add.at(st.seq_sum, (domain[ok], col[ok]), e[ok])
    np.add.at(st.seq_cnt, (domain[ok], col[ok]), 1)
    np.add.at(st.seq_skip, (domain[same], col[same]), 1)


def fold_sequences(st: Any, cp: Any, buf: Any, xp: Any) -> None:
    """Per-sequence effective rank of complete examples (and their spans) in this chunk."""
    n_spans = st.seq_sum.shape[1] - 1
    # Example-centered token Grams, one batched product per example length; a span subset's
    # centered Gram is the double-centered sub-block (J K J removes any common shift exactly).
    grams = xp.zeros((cp.seq_slots, cp.seq_len, cp.seq_len))
    rows_of_slot = np.zeros((cp.seq_slots, cp.seq_len), np.int64)
    for batch in cp.seq_batches:
        x = buf[xp.asarray(batch.index)]
        same = _identical(x, xp)
        x = x - x.mean(axis=1, keepdims=True)
        k = (x @ x.transpose(0, 2, 1)).astype(np.float64)
        L = k.shape[1]
        grams[xp.asarray(batch.slot), :L, :L] = k
        rows_of_slot[batch.slot, :L] = batch.index
        e = to_numpy(erank_of(xp.linalg.eigvalsh(k)))
        _add(st, batch.domain, n_spans, e, same)
    for sb in cp.span_batches:
        loc = xp.asarray(sb.local)
        same = _identical(buf[xp.asarray(rows_of_slot[sb.slot[:, None], sb.local])], xp)
        k = grams[xp.asarray(sb.slot)[:, None, None], loc[:, :, None], loc[:, None, :]]
        k = (
            k
            - k.mean(axis=1, keepdims=True)
            - k.mean(axis=2, keepdims=True)
            + k.mean(axis=(1, 2), keepdims=True)
        )
        e = to_numpy(erank_of(xp.linalg.eigvalsh(k)))
        _add(st, sb.domain, sb.span, e, same)
    for piece in cp.seq_pieces:
        st.pending.setdefault(piece.example, []).append(
            (buf[xp.asarray(piece.rows)].copy(), piece.spans)
        )
        if not piece.last:
            continue
        parts = st.pending.pop(piece.example)
        rows = xp.concatenate([p[0] for p in parts])
        spans = np.concatenate([p[1] for p in parts])
        sets = [(np.arange(len(spans)), n_spans)] + [
            (np.flatnonzero(spans == s), int(s)) for s in np.unique(spans)
        ]
        for idx, s in sets:
            if len(idx) < 2:
                continue
            x = rows[xp.asarray(idx)]
            if bool(_identical(x[None], xp)[0]):
                st.seq_skip[piece.domain, s] += 1
                continue
            x = x - x.mean(axis=0, keepdims=True)
            e = float(to_numpy(erank_of(xp.linalg.eigvalsh((x @ x.T).astype(np.float64)))))
            st.seq_sum[piece.domain, s] += e
            st.seq_cnt[piece.domain, s] += 1
