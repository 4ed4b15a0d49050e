"""Effective rank of eigenvalue spectra, and the per-sequence effective rank that the pass folds
in chunk by chunk (``fold_sequences``: each example's centered token matrix, and its tokens in
each span, from token-space Grams; examples that straddle chunks are carried to the next step in
``st.pending``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from analyze.xp import by_name, to_numpy


def erank_of(eigs: Any, axis: int = -1) -> Any:
    """exp(entropy) of eigenvalues normalised to sum 1 (0 log 0 = 0); NaN where all zero."""
    xp = by_name("cupy") if type(eigs).__module__.startswith("cupy") else np
    lam = xp.clip(eigs, 0.0, None)
    tot = lam.sum(axis=axis, keepdims=True)
    p = lam / xp.where(tot > 0, tot, 1.0)
    ent = -(xp.where(p > 0, p * xp.log(xp.where(p > 0, p, 1.0)), 0.0)).sum(axis=axis)
    return xp.where(tot[..., 0] > 0, xp.exp(ent), xp.nan)


def fold_sequences(st: Any, cp: Any, buf: Any, xp: Any) -> None:
    """Per-sequence effective rank of complete examples (and their spans) in this chunk."""
    n_spans = st.seq_sum.shape[1] - 1
    # Example-centered token Grams, one batched product per example length; a span subset's
    # centered Gram is the double-centered sub-block (J K J removes any common shift exactly).
    grams = xp.zeros((cp.seq_slots, cp.seq_len, cp.seq_len))
    for batch in cp.seq_batches:
        x = buf[xp.asarray(batch.index)]
        x = x - x.mean(axis=1, keepdims=True)
        k = (x @ x.transpose(0, 2, 1)).astype(np.float64)
        L = k.shape[1]
        grams[xp.asarray(batch.slot), :L, :L] = k
        e = to_numpy(erank_of(xp.linalg.eigvalsh(k)))
        np.add.at(st.seq_sum, (batch.domain, n_spans), e)
        np.add.at(st.seq_cnt, (batch.domain, n_spans), 1)
    for sb in cp.span_batches:
        loc = xp.asarray(sb.local)
        k = grams[xp.asarray(sb.slot)[:, None, None], loc[:, :, None], loc[:, None, :]]
        k = (
            k
            - k.mean(axis=1, keepdims=True)
            - k.mean(axis=2, keepdims=True)
            + k.mean(axis=(1, 2), keepdims=True)
        )
        e = to_numpy(erank_of(xp.linalg.eigvalsh(k)))
        np.add.at(st.seq_sum, (sb.domain, sb.span), e)
        np.add.at(st.seq_cnt, (sb.domain, sb.span), 1)
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
            x = x - x.mean(axis=0, keepdims=True)
            e = float(to_numpy(erank_of(xp.linalg.eigvalsh((x @ x.T).astype(np.float64)))))
            st.seq_sum[piece.domain, s] += e
            st.seq_cnt[piece.domain, s] += 1
