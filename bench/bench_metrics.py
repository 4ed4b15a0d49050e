"""Benchmark: our one-pass metric sweep against a plain NumPy loop and a naive per-metric pipeline.

    .venv/bin/python bench/bench_metrics.py [WORKDIR]      (default bench/work; stores cached)

Store: 4 checkpoints x 8 layers x 20,000 tokens x 576 features (store_schema's synthetic
generator; written once into WORKDIR, ~0.7 GB, a minute or two), token chunks of 4096.

(a) ours: ``run_metrics`` with every metric (12 selections per checkpoint and layer: the whole
    probe, 6 domains, 5 spans), threaded dask; and ours restricted to cka_base + cka_parent,
    whose inputs are exactly the products of (b) (Gram per checkpoint, cross-Gram with base and
    parent) - the like-for-like comparison of the accumulator against (b).
(b) plain NumPy loop: reads every needed chunk once (each checkpoint's chunk of a layer once),
    casts to float32, does only the whole probe's products (X^T X per checkpoint; X^T B and
    X^T P for the base B and parent P), accumulates in float64. No cells, no reference shift, no
    metrics. The issue's baseline.
(b') the same loop with the products the 12 selections need: per (domain, span) cell of each
    chunk (rows gathered in cell order), each added to its domain's and its span's Gram. What a
    hand-written loop that computes what ours computes cannot avoid; BLAS at 2 threads gains
    nothing on products of a few hundred rows.
(c) naive per-metric pipeline over the same 12 selections and moment metrics as ours (stop 10's
    version covered the whole probe only): for every metric a fresh read of the (checkpoint,
    layer) matrix; the spectrum metrics each from a full SVD of the centered selection (RankMe:
    of the raw one); anisotropy from the N x N cosine matrix and CKA from N x N Gram matrices
    (HSIC form) on at most 5,000 rows of the selection (N x N at N = 20,000 is 3.2 GB in
    float64: the subsample is what a naive user does); the probes and silhouette as ours, on
    300 rows per domain. Not covered: per-sequence rank. Timed on one layer of every checkpoint
    and scaled to 8 layers (reported as such).
Large: (b), (b') and ours at LARGE_TOKENS = 160,000 tokens (a 5.9 GB store, written once in
about three minutes): the derivation (eigenvalues of 24 d x d matrices, two probes and a
silhouette per checkpoint and layer) costs the same at any N, the products grow with N.
Memory: peak RSS of ours (full sweep, fresh process) at 10,000, 20,000 and 160,000 tokens.
Uncertainty: the full sweep at 10,000 tokens without and with ``--uncertainty`` (10 example
groups), side by side in one process. ``bench_metrics.py WORKDIR N --uncertainty-only``: only that
comparison, on an N-token store (default 10,000) and layers 2 and 5 (a quick run).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zarr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store  # noqa: E402

N_CKPT, N_LAYERS, N_FEAT, CHUNK = 4, 8, 576, 4096
LARGE_TOKENS = 160_000
NAIVE_SUBSAMPLE = 5000


def spec(n_tokens: int) -> SyntheticSpec:
    return SyntheticSpec(
        n_checkpoints=N_CKPT,
        n_layers=N_LAYERS,
        n_tokens=n_tokens,
        n_features=N_FEAT,
        token_chunk=CHUNK,
        vocab_size=64,
        lora_rank=8,
    )


def ensure_store(workdir: Path, n_tokens: int) -> tuple[Path, float]:
    """The cached synthetic store for ``n_tokens`` (written once; returns its path, write time)."""
    path = workdir / f"store_{n_tokens}.zarr"
    done = workdir / f"store_{n_tokens}.done"
    if done.exists():
        return path, json.loads(done.read_text())["seconds"]
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    make_synthetic_store(path, spec(n_tokens))
    seconds = time.perf_counter() - t0
    done.write_text(json.dumps({"seconds": seconds}))
    return path, seconds


def plain_numpy_loop(store: Path, blas_threads: int | None = None) -> float:
    """(b): every needed chunk read once, only the needed float32 products, float64 sums."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(blas_threads):
        return _plain(store)


def _plain(store: Path, cells: list | None = None, n_domains: int = 0, n_spans: int = 0) -> float:
    """(b), or (b') when ``cells`` gives each chunk's cell order and cuts."""
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
            _cell_layer(hidden, layer, cells, len(names), base, parent, n_domains, n_spans, d)
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
) -> None:
    """(b') for one layer: per-domain and per-span Grams and cross-Grams from cell products."""
    acc = {}  # (checkpoint, reference) -> (per-domain, per-span) float64 sums
    pairs = [(c, c) for c in range(n_ckpt)]
    pairs += [(c, r) for c in range(n_ckpt) for r in {base, parent[c]} - {None, c}]
    for c, r in pairs:
        acc[(c, r)] = (np.zeros((n_domains, d, d)), np.zeros((n_spans, d, d)))
    for k, (order, cuts) in enumerate(cells):
        a0 = k * CHUNK
        x = [
            np.asarray(hidden[c, layer, a0 : a0 + CHUNK])[order].astype(np.float32)
            for c in range(n_ckpt)
        ]
        for (c, r), (gd, gs) in acc.items():
            for di, si, a, b in cuts:
                g = x[c][a:b].T @ x[r][a:b]
                gd[di] += g
                gs[si] += g


def plain_cell_loop(store: Path, blas_threads: int | None = None) -> float:
    """(b'): (b) with the products the 12 selections need: per (domain, span) cell of each chunk
    (rows gathered in cell order, once), each product added to its domain's and its span's Gram
    (the whole probe's is the sum of the domains'). Still no shift, no sums, no metrics."""
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
        return _plain(store, cuts, dom.max() + 1, span.max() + 1)


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


def ours(
    store: Path,
    out: Path,
    metrics: list[str] | None = None,
    scheduler: str | None = None,
    options: object | None = None,
    layers: list[int] | None = None,
) -> dict:
    from repcollapse.analyze.engine.runner import run_metrics

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    summary = run_metrics(
        store,
        out,
        metrics=metrics,
        layers=layers,
        scheduler_address=scheduler,
        options=options,  # type: ignore[arg-type]
        log=lambda _: None,
    )
    wall = time.perf_counter() - t0
    return {
        "seconds": wall,
        "breakdown": {k: round(v, 2) for k, v in summary.seconds.items()},
        "passes": summary.passes,
        "blocks_read": summary.blocks_read,
    }


def ours_fresh(store: Path, out: Path) -> dict:
    """Our full sweep in a fresh process: its wall time (around ``run_metrics``) and peak RSS
    (VmHWM: ru_maxrss survives fork + exec on Linux)."""
    shutil.rmtree(out, ignore_errors=True)
    code = (
        f"import sys, time; sys.path.insert(0, {str(REPO)!r})\n"
        "from repcollapse.analyze.engine.runner import run_metrics\n"
        "t0 = time.perf_counter()\n"
        f"run_metrics({str(store)!r}, {str(out)!r}, log=lambda _: None)\n"
        "seconds = time.perf_counter() - t0\n"
        "hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0]\n"
        "print(seconds, int(hwm.split()[1]))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, kib = res.stdout.strip().splitlines()[-1].split()
    return {"seconds": round(float(seconds), 2), "peak_rss_mb": round(int(kib) / 1024, 1)}


def best_plain(store: Path) -> dict:
    """(b) and (b') with 1 BLAS thread and the default, the page cache warmed first."""
    plain_numpy_loop(store, 1)
    return {
        "b_blas_1_thread": round(plain_numpy_loop(store, 1), 2),
        "b_blas_default_threads": round(plain_numpy_loop(store, None), 2),
        "b_cells_blas_1_thread": round(plain_cell_loop(store, 1), 2),
        "b_cells_blas_default_threads": round(plain_cell_loop(store, None), 2),
    }


def large(workdir: Path) -> dict:
    """The full sweep against (b) and (b') at LARGE_TOKENS: the derivation (eigenvalues,
    probes, silhouette) costs the same per (checkpoint, layer) at any N, the products grow with N."""
    store, write_s = ensure_store(workdir, LARGE_TOKENS)
    out = {"tokens": LARGE_TOKENS, "write_seconds": round(write_s, 1), **best_plain(store)}
    out["ours_full_sweep"] = ours_fresh(store, workdir / "out_large")
    b = min(out["b_blas_1_thread"], out["b_blas_default_threads"])
    bc = min(out["b_cells_blas_1_thread"], out["b_cells_blas_default_threads"])
    out["ratio_full_vs_best_b"] = round(out["ours_full_sweep"]["seconds"] / b, 2)
    out["ratio_full_vs_best_b_cells"] = round(out["ours_full_sweep"]["seconds"] / bc, 2)
    return out


def uncertainty_cost(store: Path, workdir: Path, layers: list[int] | None = None) -> dict:
    """The full sweep without and with --uncertainty (default groups), side by side in one
    process on the same store (the second run after the first warmed the page cache; a third
    run, without again, bounds the drift of a shared machine)."""
    from repcollapse.analyze.options import Options

    plain = ours(store, workdir / "out_unc0", options=Options(), layers=layers)
    jk = ours(store, workdir / "out_unc1", options=Options(uncertainty=True), layers=layers)
    again = ours(store, workdir / "out_unc2", options=Options(), layers=layers)
    base = min(plain["seconds"], again["seconds"])
    return {
        "layers": layers or "all",
        "groups": Options().uncertainty_groups,
        "without_s": round(plain["seconds"], 2),
        "without_again_s": round(again["seconds"], 2),
        "with_s": round(jk["seconds"], 2),
        "without_breakdown": plain["breakdown"],
        "with_breakdown": jk["breakdown"],
        "ratio": round(jk["seconds"] / base, 2),
    }


def run(workdir: str | Path) -> dict:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    store, write_s = ensure_store(workdir, 20_000)
    small, _ = ensure_store(workdir, 10_000)
    results: dict = {
        "store": {
            "checkpoints": N_CKPT,
            "layers": N_LAYERS,
            "tokens": 20_000,
            "features": N_FEAT,
            "token_chunk": CHUNK,
            "write_seconds": round(write_s, 1),
        }
    }
    # first: fresh processes, nothing else running here yet
    results["peak_rss_mb"] = {
        "tokens_10000": ours_fresh(small, workdir / "out_mem10k")["peak_rss_mb"],
        "tokens_20000": ours_fresh(store, workdir / "out_mem20k")["peak_rss_mb"],
    }
    # BLAS threads matter on a shared machine: OpenBLAS with 2 threads on 2 busy cores collapses.
    results["plain_s"] = best_plain(store)
    results["a_ours_products_only"] = {
        "threads": ours(store, workdir / "out_cka", ["cka_base", "cka_parent"]),
        "sync": ours(store, workdir / "out_cka1", ["cka_base", "cka_parent"], "sync"),
    }
    results["a_ours_full_sweep"] = ours(store, workdir / "out_full")
    naive_layers = [N_LAYERS // 2]
    t = naive_pipeline(store, naive_layers)
    results["c_naive"] = {
        "measured_layers": naive_layers,
        "measured_s": round(t, 1),
        "scaled_to_all_layers_s": round(t * N_LAYERS / len(naive_layers), 1),
    }
    results["uncertainty"] = uncertainty_cost(small, workdir)
    results["large"] = large(workdir)
    plain = results["plain_s"]
    b = min(plain["b_blas_1_thread"], plain["b_blas_default_threads"])
    bc = min(plain["b_cells_blas_1_thread"], plain["b_cells_blas_default_threads"])
    prod, full = results["a_ours_products_only"], results["a_ours_full_sweep"]["seconds"]
    results["ratios"] = {
        "products_only_threads_vs_best_b": round(prod["threads"]["seconds"] / b, 2),
        "products_only_threads_vs_best_b_cells": round(prod["threads"]["seconds"] / bc, 2),
        "full_vs_best_b": round(full / b, 2),
        "full_vs_best_b_cells": round(full / bc, 2),
        "naive_vs_full": round(results["c_naive"]["scaled_to_all_layers_s"] / full, 1),
    }
    results["load_average_1min_at_end"] = round(__import__("os").getloadavg()[0], 2)
    results["lines"] = _lines(results, b, bc)
    return results


def _lines(r: dict, b: float, bc: float) -> list[tuple]:
    """run_all's one line per figure: (label, value, unit, ratio or None, target or None)."""
    prod, full = r["a_ours_products_only"], r["a_ours_full_sweep"]["seconds"]
    mem, plain, big = r["peak_rss_mb"], r["plain_s"], r["large"]
    big_full = big["ours_full_sweep"]["seconds"]
    big_b = min(big["b_blas_1_thread"], big["b_blas_default_threads"])
    big_bc = min(big["b_cells_blas_1_thread"], big["b_cells_blas_default_threads"])
    naive = r["c_naive"]["scaled_to_all_layers_s"]
    n_big = f"{big['tokens']:,}"
    return [
        (
            "(b) plain loop, whole-probe products, 1 thread",
            plain["b_blas_1_thread"],
            "s",
            None,
            None,
        ),
        ("(b) the same, default BLAS threads", plain["b_blas_default_threads"], "s", None, None),
        (
            "(b') plain loop, per-cell products, 1 thread",
            plain["b_cells_blas_1_thread"],
            "s",
            None,
            None,
        ),
        (
            "(b') the same, default BLAS threads",
            plain["b_cells_blas_default_threads"],
            "s",
            None,
            None,
        ),
        (
            "(a) ours, products only, vs best (b)",
            prod["threads"]["seconds"],
            "s",
            prod["threads"]["seconds"] / b,
            None,
        ),
        (
            "(a) ours, products only, sync, vs best (b)",
            prod["sync"]["seconds"],
            "s",
            prod["sync"]["seconds"] / b,
            None,
        ),
        ("(a) ours, full sweep, vs best (b)", full, "s", full / b, "<= 1.3x"),
        ("(a) ours, full sweep, vs best (b')", full, "s", full / bc, None),
        ("(c) naive per-metric pipeline (scaled)", naive, "s", naive / full, ">= 10x ours"),
        (f"(b) best, {n_big} tokens", big_b, "s", None, None),
        (f"(b') best, {n_big} tokens", big_bc, "s", None, None),
        (
            f"(a) ours, full sweep, {n_big} tokens, vs (b)",
            big_full,
            "s",
            big_full / big_b,
            "<= 1.3x",
        ),
        (f"(a) ours, full sweep, {n_big} tokens, vs (b')", big_full, "s", big_full / big_bc, None),
        (
            "(a) ours, full sweep, 10,000 tokens, --uncertainty",
            r["uncertainty"]["with_s"],
            "s",
            r["uncertainty"]["ratio"],
            None,
        ),
        ("peak RSS, full sweep, 10,000 tokens", mem["tokens_10000"], "MiB", None, None),
        (
            "peak RSS, full sweep, 20,000 tokens",
            mem["tokens_20000"],
            "MiB",
            mem["tokens_20000"] / mem["tokens_10000"],
            "flat (1x)",
        ),
        (
            f"peak RSS, full sweep, {n_big} tokens",
            big["ours_full_sweep"]["peak_rss_mb"],
            "MiB",
            big["ours_full_sweep"]["peak_rss_mb"] / mem["tokens_10000"],
            "flat (1x)",
        ),
    ]


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    target = Path(args[0] if args else str(REPO / "bench" / "work"))
    if "--uncertainty-only" in sys.argv:  # the with/without comparison alone, at a small size
        target.mkdir(parents=True, exist_ok=True)
        tokens = int(args[1]) if len(args) > 1 else 10_000
        print(
            json.dumps(uncertainty_cost(ensure_store(target, tokens)[0], target, [2, 5]), indent=1)
        )
    else:
        print(json.dumps(run(target), indent=1))
