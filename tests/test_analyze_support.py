"""Helpers for the analyze tests: stores with chosen hidden states, brute-force references.

The references work on the full N x d matrix in float64 (N x N where the definition is
pairwise), independently of the accumulator, so every one-pass metric is checked against the
textbook formula.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from repcollapse.analyze.engine.moments import erank_of
from repcollapse.analyze.metrics.spectrum import alpha_fit
from repcollapse.store_schema import StoreWriter, open_store
from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store

SMALL = SyntheticSpec(n_checkpoints=3, n_layers=3, n_tokens=600, n_features=12, token_chunk=128)


def store_with(path: Path, spec: SyntheticSpec = SMALL, hidden: np.ndarray | None = None) -> Path:
    """A synthetic store; ``hidden`` (checkpoint, layer, token, feature) replaces its states."""
    make_synthetic_store(path, spec)
    if hidden is not None:
        g = zarr.open_group(str(path), mode="r+")
        g["hidden"][:] = np.asarray(hidden, np.float16)
        resign(path)
    return path


def resign(path: Path) -> None:
    """Record new checksums after a test wrote data into the store by hand: analysis refuses
    data that differ from what was recorded (as it should for anything but a test)."""
    writer = StoreWriter(path)
    for index in range(len(writer.names())):
        writer.record_checksums(index)


def rows_of(
    ds,
    checkpoint: str,
    layer: int,
    domain: str = "all",
    span: str = "all",
    include_sinks: bool = False,
) -> np.ndarray:
    """The float64 hidden states of one selection, straight from the store."""
    h = np.asarray(ds["hidden"].sel(checkpoint=checkpoint).isel(layer=layer).values, np.float64)
    keep = (
        np.ones(len(h), bool) if include_sinks else ~np.asarray(ds["is_sink"].values).astype(bool)
    )
    if domain != "all":
        keep &= np.asarray(ds["domain"].values) == domain
    if span != "all":
        keep &= np.asarray(ds["span"].values) == span
    return h[keep]


def bf_spectrum(H: np.ndarray) -> dict[str, float]:
    n, d = H.shape
    Hc = H - H.mean(axis=0)
    lam = np.sort(np.linalg.svd(Hc, compute_uv=False) ** 2 / (n - 1))[::-1]
    lam = np.r_[lam, np.zeros(max(0, d - len(lam)))]
    p = lam / lam.sum()
    nz = p[p > 0]
    erank = float(np.exp(-(nz * np.log(nz)).sum()))
    m = min(n - 1, d)
    sv = np.linalg.svd(H, compute_uv=False)
    q = sv / sv.sum()
    q = q[q > 0]
    return {
        "erank": erank,
        "erank_norm": erank / m,
        "pr": float(lam.sum() ** 2 / (lam**2).sum()),
        "pr_norm": float(lam.sum() ** 2 / (lam**2).sum()) / m,
        "topk_var_1": float(lam[:1].sum() / lam.sum()),
        "topk_var_10": float(lam[:10].sum() / lam.sum()),
        "alpha_req": alpha_fit(lam, m),
        "rankme": float(np.exp(-(q * np.log(q)).sum())),
    }


def bf_aniso(H: np.ndarray) -> float:
    """Mean cosine over distinct pairs, from the N x N cosine matrix."""
    U = H / np.linalg.norm(H, axis=1, keepdims=True)
    S = U @ U.T
    n = len(H)
    return float((S.sum() - np.trace(S)) / (n * (n - 1)))


def bf_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Gram-form HSIC: tr(KL) / sqrt(tr(KK) tr(LL)), K = Xc Xc^T, L = Yc Yc^T."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    K, L = Xc @ Xc.T, Yc @ Yc.T
    return float(np.trace(K @ L) / np.sqrt(np.trace(K @ K) * np.trace(L @ L)))


def bf_sep_ratio(H: np.ndarray, labels: np.ndarray) -> float:
    mu = H.mean(0)
    sb = sw = 0.0
    for lab in np.unique(labels):
        Hk = H[labels == lab]
        sb += len(Hk) * float(((Hk.mean(0) - mu) ** 2).sum())
        sw += float(((Hk - Hk.mean(0)) ** 2).sum())
    return sb / sw


def bf_erank_rows(H: np.ndarray) -> float:
    Hc = H - H.mean(0)
    return float(erank_of(np.linalg.svd(Hc, compute_uv=False) ** 2))


def bf_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """Direct loop over tokens into equal-width bins [b/15, (b+1)/15) (last bin closed)."""
    count, sconf, sacc = np.zeros(n_bins), np.zeros(n_bins), np.zeros(n_bins)
    for c, ok in zip(conf, correct, strict=True):
        b = min(int(c * n_bins), n_bins - 1)
        count[b] += 1
        sconf[b] += c
        sacc[b] += float(ok)
    ece = 0.0
    for b in range(n_bins):
        if count[b]:
            ece += count[b] / len(conf) * abs(sacc[b] / count[b] - sconf[b] / count[b])
    return ece


def value(
    table: pd.DataFrame,
    metric: str,
    checkpoint: str,
    layer: int,
    domain: str = "all",
    span: str = "all",
) -> float:
    sel = table[
        (table.metric == metric)
        & (table.checkpoint == checkpoint)
        & (table.layer == layer)
        & (table.domain == domain)
        & (table.span == span)
    ]
    assert len(sel) == 1, f"{metric} {checkpoint} L{layer} {domain}/{span}: {len(sel)} rows"
    return float(sel.value.iloc[0])


def open_ds(path: Path):
    return open_store(path)


@contextlib.contextmanager
def registry_restored(*plugin_modules: str) -> Iterator[None]:
    """Plugins register into the process-wide metric registry: put it back as it was (the
    other tests and the generated docs list it) and forget the plugin modules loaded."""
    from repcollapse.analyze import plugins, registry

    metrics, loaded = dict(registry.REGISTRY._metrics), dict(plugins._LOADED)
    try:
        yield
    finally:
        registry.REGISTRY._metrics.clear()
        registry.REGISTRY._metrics.update(metrics)
        plugins._LOADED.clear()
        plugins._LOADED.update(loaded)
        for name in plugin_modules:
            sys.modules.pop(name, None)
