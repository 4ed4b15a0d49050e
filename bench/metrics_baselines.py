"""The plain loops and the naive pipeline that ``bench_metrics`` times ours against: (b), (b'),
(b'') and (c) (their definitions are in that module's docstring)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import zarr

CHUNK = 4096
"""The bench stores' token chunk (``bench_metrics`` writes them with it)."""
NAIVE_SUBSAMPLE = 5000


def plain_numpy_loop(store: Path, blas_threads: int | None = None) -> float:
    """(b): every needed chunk read once, only the needed float32 products, float64 sums."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(blas_threads):
        return _plain(store)


def _plain(
    store: Path,
    cells: list | None = None,
    n_domains: int = 0,
    n_spans: int = 0,
    own64: bool = False,
) -> float:
    """(b), or (b') when ``cells`` gives each chunk's cell order and cuts ((b'') with ``own64``)."""
    g = zarr.open_group(str(store), mode="r")
    hidden = g["hidden"]
    names = [str(x) for x in g["name"][:]]
    parents = [str(x) for x in g["parent"][:]]
    parent = {i: names.index(p) if p in names else None for i, p in enumerate(parents)}
    base = 0
    n_tokens, d = hidden.shape[2], hidden.shape[3]
    t0 = time.perf_counter()
    for layer in range(hidden.shape[1]):
        if cells is not None:
            _cell_layer(
                hidden, layer, cells, len(names), base, parent, n_domains, n_spans, d, own64
            )
            continue
        gram = np.zeros((len(names), d, d))
        cross = {}
        for a in range(0, n_tokens, CHUNK):
            x = [
                np.asarray(hidden[c, layer, a : a + CHUNK]).astype(np.float32)
                for c in range(len(names))
            ]
            for c in range(len(names)):
                gram[c] += x[c].T @ x[c]
                for ref in {base, parent[c]} - {None, c}:
                    cross[(c, ref)] = cross.get((c, ref), 0.0) + x[c].T @ x[ref]
    return time.perf_counter() - t0


def _cell_layer(
    hidden: zarr.Array,
    layer: int,
    cells: list,
    n_ckpt: int,
    base: int,
    parent: dict,
    n_domains: int,
    n_spans: int,
    d: int,
    own64: bool = False,
) -> None:
    """(b') for one layer: per-domain and per-span Grams and cross-Grams from cell products
    ((b''): each checkpoint's own Grams from float64 rows, as ours forms them)."""
    acc = {}  # (checkpoint, reference) -> (per-domain, per-span) float64 sums
    pairs = [(c, c) for c in range(n_ckpt)]
    pairs += [(c, r) for c in range(n_ckpt) for r in {base, parent[c]} - {None, c}]
    for c, r in pairs:
        acc[(c, r)] = (np.zeros((n_domains, d, d)), np.zeros((n_spans, d, d)))
    for k, (order, cuts) in enumerate(cells):
        a0 = k * CHUNK
        raw = [np.asarray(hidden[c, layer, a0 : a0 + CHUNK])[order] for c in range(n_ckpt)]
        x = [v.astype(np.float32) for v in raw]
        x64 = [v.astype(np.float64) for v in raw] if own64 else x
        for (c, r), (gd, gs) in acc.items():
            rows = x64 if own64 and c == r else x
            for di, si, a, b in cuts:
                g = rows[c][a:b].T @ rows[r][a:b]
                gd[di] += g
                gs[si] += g


def plain_cell_loop(store: Path, blas_threads: int | None = None, own64: bool = False) -> float:
    """(b'): (b) with the products the 12 selections need: per (domain, span) cell of each chunk
    (rows gathered in cell order, once), each product added to its domain's and its span's Gram
    (the whole probe's is the sum of the domains'). Still no shift, no sums, no metrics.
    (b''), ``own64``: each checkpoint's own Grams from float64 rows (RankMe needs them: see
    repcollapse.analyze.engine.moments), the cross-Grams float32 - the products at the precision
    ours uses, i.e. the floor of any sweep that computes what ours computes."""
    from threadpoolctl import threadpool_limits

    from repcollapse.store_schema import open_store

    ds = open_store(store)
    keep = ~np.asarray(ds["is_sink"].values).astype(bool)
    dom = np.unique(np.asarray(ds["domain"].values).astype(str), return_inverse=True)[1]
    span = np.unique(np.asarray(ds["span"].values).astype(str), return_inverse=True)[1]
    cell = dom * (span.max() + 1) + span
    cuts = []  # per chunk: (rows in cell order, [(domain, span, a, b) per cell])
    for t0 in range(0, len(cell), CHUNK):
        rel = np.flatnonzero(keep[t0 : t0 + CHUNK])
        order = rel[np.argsort(cell[t0 + rel], kind="stable")]
        c = cell[t0 + order]
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        ends = np.r_[starts[1:], len(c)]
        cuts.append(
            (
                order,
                [
                    (dom[t0 + order[a]], span[t0 + order[a]], a, b)
                    for a, b in zip(starts, ends, strict=True)
                ],
            )
        )
    with threadpool_limits(blas_threads):
        return _plain(store, cuts, dom.max() + 1, span.max() + 1, own64)


def naive_pipeline(store: Path, layers: list[int]) -> float:
    """(c) on ``layers`` of every checkpoint, the selections and metrics of ours (see the module
    docstring)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import silhouette_score
    from sklearn.preprocessing import StandardScaler

    from repcollapse.store_schema import open_store

    ds = open_store(store)
    keep = ~np.asarray(ds["is_sink"].values).astype(bool)
    dom = np.asarray(ds["domain"].values)[keep]
    span = np.asarray(ds["span"].values)[keep]
    names = [str(x) for x in ds["name"].values]
    parents = [str(x) for x in ds["parent"].values]
    rng = np.random.default_rng(0)
    selections = [np.ones(len(dom), bool)]
    selections += [dom == d for d in np.unique(dom)] + [span == x for x in np.unique(span)]
    # N x N matrices on at most NAIVE_SUBSAMPLE rows of each selection
    subs = [
        np.sort(rng.choice(np.flatnonzero(m), min(NAIVE_SUBSAMPLE, int(m.sum())), replace=False))
        for m in selections
    ]
    sample = np.sort(
        np.concatenate(
            [rng.choice(np.flatnonzero(dom == d), 300, replace=False) for d in np.unique(dom)]
        )
    )
    fit = rng.random(len(sample)) < 0.75

    def read(c: str, layer: int) -> np.ndarray:
        h = ds["hidden"].sel(checkpoint=c).isel(layer=layer).values
        return np.asarray(h, np.float64)[keep]

    def spectrum_metric(H: np.ndarray, which: str) -> float:
        Hc = H - H.mean(0)
        s = np.linalg.svd(Hc, compute_uv=False)
        lam = s**2 / (len(H) - 1)
        p = lam / lam.sum()
        return {
            "erank": float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum())),
            "pr": float(lam.sum() ** 2 / (lam**2).sum()),
            "top1": float(lam[:1].sum() / lam.sum()),
            "top10": float(lam[:10].sum() / lam.sum()),
            "alpha": float(
                np.polyfit(np.log(np.arange(1, len(lam) + 1)), np.log(lam + 1e-30), 1)[0]
            ),
        }[which]

    def cos_mean(H: np.ndarray) -> float:
        U = H / np.linalg.norm(H, axis=1, keepdims=True)
        S = U @ U.T
        return float((S.sum() - len(H)) / (len(H) * (len(H) - 1)))

    def hsic_cka(X: np.ndarray, Y: np.ndarray) -> float:
        Xc, Yc = X - X.mean(0), Y - Y.mean(0)
        K, L = Xc @ Xc.T, Yc @ Yc.T
        return float((K * L).sum() / np.sqrt((K * K).sum() * (L * L).sum()))

    def probe(H: np.ndarray, labels: np.ndarray) -> float:
        scaler = StandardScaler().fit(H[fit])
        clf = LogisticRegression(max_iter=100, random_state=0)
        clf.fit(scaler.transform(H[fit]), labels[fit])
        return float(clf.score(scaler.transform(H[~fit]), labels[~fit]))

    t0 = time.perf_counter()
    for layer in layers:
        for c, p in zip(names, parents, strict=True):
            for m, sub in zip(selections, subs, strict=True):
                for which in ("erank", "erank_norm", "pr", "pr_norm", "top1", "top10", "alpha"):
                    spectrum_metric(read(c, layer)[m], which.replace("_norm", ""))
                np.linalg.svd(read(c, layer)[m], compute_uv=False)  # rankme
                cos_mean(read(c, layer)[sub])
                H = read(c, layer)[sub]
                cos_mean(H - H.mean(0))
                for ref in ("base", p):
                    if ref in names and ref != c:
                        hsic_cka(read(c, layer)[sub], read(ref, layer)[sub])
            H = read(c, layer)
            mu = H.mean(0)
            sum(((H[dom == k].mean(0) - mu) ** 2).sum() for k in np.unique(dom))
            probe(read(c, layer)[sample], dom[sample])
            probe(read(c, layer)[sample], rng.permutation(dom[sample]))
            silhouette_score(read(c, layer)[sample], dom[sample], metric="cosine")
    return time.perf_counter() - t0


def best_plain(store: Path) -> dict:
    """(b), (b') and (b'') with 1 BLAS thread and the default, the page cache warmed first."""
    plain_numpy_loop(store, 1)
    return {
        "b_blas_1_thread": round(plain_numpy_loop(store, 1), 2),
        "b_blas_default_threads": round(plain_numpy_loop(store, None), 2),
        "b_cells_blas_1_thread": round(plain_cell_loop(store, 1), 2),
        "b_cells_blas_default_threads": round(plain_cell_loop(store, None), 2),
        "b_own64_blas_1_thread": round(plain_cell_loop(store, 1, own64=True), 2),
        "b_own64_blas_default_threads": round(plain_cell_loop(store, None, own64=True), 2),
    }


def best(plain: dict, kind: str) -> float:
    """The faster of a loop's 1-thread and default-thread times."""
    return min(plain[f"{kind}_blas_1_thread"], plain[f"{kind}_blas_default_threads"])
