"""Benchmark: our one-pass metric sweep against a plain NumPy loop and a naive per-metric pipeline.

    .venv/bin/python bench/bench_metrics.py [WORKDIR]      (default bench/work; stores cached)

Store: 4 checkpoints x 8 layers x 20,000 tokens x 576 features (store_schema's synthetic
generator; written once into WORKDIR, ~0.7 GB, a minute or two), token chunks of 4096.

(a) ours: ``run_metrics`` with every metric (12 selections per checkpoint and layer: the whole
    probe, 6 domains, 5 spans), threaded dask; and ours restricted to cka_base + cka_parent,
    whose inputs are exactly the products of (b) (Gram per checkpoint, cross-Gram with base and
    parent) - the like-for-like comparison of the accumulator against (b).
(b) plain NumPy loop (bench.metrics_baselines, as b', b'' and c are): reads every needed chunk
    once (each checkpoint's chunk of a layer once), casts to float32, does only the whole
    probe's products (X^T X per checkpoint; X^T B and X^T P for the base B and parent P),
    accumulates in float64. No cells, no reference shift, no metrics. The issue's baseline.
(b') the same loop with the products the 12 selections need: per (domain, span) cell of each
    chunk (rows gathered in cell order), each added to its domain's and its span's Gram. What a
    hand-written loop that computes what ours computes cannot avoid; BLAS at 2 threads gains
    less on products of a few hundred rows (1.4x against (b)'s 1.7x, 2026-12-06).
(b'') (b') with each checkpoint's own Grams from float64 rows, as ours forms them (RankMe needs
    them: repcollapse.analyze.engine.moments), the cross-Grams float32: the products at our
    precision, the floor of any sweep that computes what ours computes. A float64 product costs
    twice a float32 one here, so (b'') / (b) is already above 1.3.
(c) naive per-metric pipeline over the same 12 selections and moment metrics as ours (stop 10's
    version covered the whole probe only): for every metric a fresh read of the (checkpoint,
    layer) matrix; the spectrum metrics each from a full SVD of the centered selection (RankMe:
    of the raw one); anisotropy from the N x N cosine matrix and CKA from N x N Gram matrices
    (HSIC form) on at most 5,000 rows of the selection (N x N at N = 20,000 is 3.2 GB in
    float64: the subsample is what a naive user does); the probes and silhouette as ours, on
    300 rows per domain. Not covered: per-sequence rank. Timed on one layer of every checkpoint
    and scaled to 8 layers (reported as such).
Large: (b), (b'), (b''), ours with the products alone and ours in full at LARGE_TOKENS = 160,000
tokens (a 5.9 GB store, written once in about three minutes): the derivation (eigenvalues of 24
d x d matrices, two probes and a silhouette per checkpoint and layer) costs the same at any N,
the products grow with N.
Derivation: the fixed cost of one (checkpoint, layer) and its parts (bench.metrics_derivation).
Ours runs with the malloc settings of ``repcollapse analyze metrics`` (engine.allocator): the
fresh processes set them, and this process sets them after its memory figures (so the loops
share them).
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.metrics_baselines import (  # noqa: E402
    CHUNK,
    best,
    best_plain,
    naive_pipeline,
)
from bench.metrics_derivation import derivation_cost  # noqa: E402
from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store  # noqa: E402

N_CKPT, N_LAYERS, N_FEAT = 4, 8, 576
LARGE_TOKENS = 160_000
PRODUCT_METRICS = ["cka_base", "cka_parent"]
"""Ours restricted to these: exactly the products of (b) (a Gram per checkpoint, cross-Grams
with base and parent), per cell and with the own Grams in float64 - the engine against (b'')."""


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


def ours_fresh(store: Path, out: Path, metrics: list[str] | None = None) -> dict:
    """Our sweep (every metric, or ``metrics``) in a fresh process with the malloc settings of
    ``repcollapse analyze metrics`` (engine.allocator): its wall time (around ``run_metrics``)
    and peak RSS (VmHWM: ru_maxrss survives fork + exec on Linux)."""
    shutil.rmtree(out, ignore_errors=True)
    code = (
        f"import sys, time; sys.path.insert(0, {str(REPO)!r})\n"
        "from repcollapse.analyze.engine import allocator\n"
        "from repcollapse.analyze.engine.runner import run_metrics\n"
        "allocator.tune()\n"
        "t0 = time.perf_counter()\n"
        f"run_metrics({str(store)!r}, {str(out)!r}, metrics={metrics!r}, log=lambda _: None)\n"
        "seconds = time.perf_counter() - t0\n"
        "hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0]\n"
        "print(seconds, int(hwm.split()[1]))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, kib = res.stdout.strip().splitlines()[-1].split()
    return {"seconds": round(float(seconds), 2), "peak_rss_mb": round(int(kib) / 1024, 1)}


def large(workdir: Path) -> dict:
    """The full sweep against (b), (b') and (b'') at LARGE_TOKENS, and ours with the products
    alone: the derivation (eigenvalues, probes, silhouette) costs the same per (checkpoint,
    layer) at any N, the products grow with N."""
    store, write_s = ensure_store(workdir, LARGE_TOKENS)
    out = {"tokens": LARGE_TOKENS, "write_seconds": round(write_s, 1), **best_plain(store)}
    out["ours_products_only"] = ours_fresh(store, workdir / "out_large_cka", PRODUCT_METRICS)
    out["ours_full_sweep"] = ours_fresh(store, workdir / "out_large")
    full, prod = out["ours_full_sweep"]["seconds"], out["ours_products_only"]["seconds"]
    b, bc, b64 = (best(out, kind) for kind in ("b", "b_cells", "b_own64"))
    out["ratio_full_vs_best_b"] = round(full / b, 2)
    out["ratio_full_vs_best_b_cells"] = round(full / bc, 2)
    out["ratio_own64_vs_best_b"] = round(b64 / b, 2)
    out["ratio_products_only_vs_own64"] = round(prod / b64, 2)
    out["ratio_full_vs_products_only"] = round(full / prod, 2)
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
    from repcollapse.analyze.engine import allocator

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
    # this process as `analyze metrics` runs (engine.allocator): the loops below share it
    results["malloc_settings"] = allocator.tune()
    # BLAS threads matter on a shared machine: OpenBLAS with 2 threads on 2 busy cores collapses.
    results["plain_s"] = best_plain(store)
    results["a_ours_products_only"] = {
        "threads": ours(store, workdir / "out_cka", PRODUCT_METRICS),
        "sync": ours(store, workdir / "out_cka1", PRODUCT_METRICS, "sync"),
    }
    results["a_ours_full_sweep"] = ours(store, workdir / "out_full")
    results["derivation"] = derivation_cost(store, N_LAYERS // 2)
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
    b, bc, b64 = (best(plain, kind) for kind in ("b", "b_cells", "b_own64"))
    prod, full = results["a_ours_products_only"], results["a_ours_full_sweep"]["seconds"]
    results["ratios"] = {
        "products_only_threads_vs_best_b": round(prod["threads"]["seconds"] / b, 2),
        "products_only_threads_vs_best_b_cells": round(prod["threads"]["seconds"] / bc, 2),
        "products_only_threads_vs_best_b_own64": round(prod["threads"]["seconds"] / b64, 2),
        "full_vs_best_b": round(full / b, 2),
        "full_vs_best_b_cells": round(full / bc, 2),
        "naive_vs_full": round(results["c_naive"]["scaled_to_all_layers_s"] / full, 1),
    }
    results["load_average_1min_at_end"] = round(__import__("os").getloadavg()[0], 2)
    results["lines"] = _lines(results)
    return results


def _lines(r: dict) -> list[tuple]:
    """run_all's one line per figure: (label, value, unit, ratio or None, target or None)."""
    prod, full = r["a_ours_products_only"], r["a_ours_full_sweep"]["seconds"]
    mem, plain, big = r["peak_rss_mb"], r["plain_s"], r["large"]
    b, b64 = best(plain, "b"), best(plain, "b_own64")
    big_full, big_prod = big["ours_full_sweep"]["seconds"], big["ours_products_only"]["seconds"]
    big_b, big_bc, big_b64 = (best(big, kind) for kind in ("b", "b_cells", "b_own64"))
    naive = r["c_naive"]["scaled_to_all_layers_s"]
    n_big = f"{big['tokens']:,}"
    der = r["derivation"]["ms_per_checkpoint_layer"]
    lines: list[tuple] = [
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
        ("(b'') (b') with own Grams in float64, best", b64, "s", b64 / b, None),
        (
            "(a) ours, products only, vs best (b)",
            prod["threads"]["seconds"],
            "s",
            prod["threads"]["seconds"] / b,
            None,
        ),
        (
            "(a) ours, products only, vs (b'')",
            prod["threads"]["seconds"],
            "s",
            prod["threads"]["seconds"] / b64,
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
        ("(a) ours, full sweep, vs best (b')", full, "s", full / best(plain, "b_cells"), None),
        ("derivation per (checkpoint, layer), 1 thread", der["total"], "ms", None, None),
    ]
    for part in ("eig_cov", "eig_second", "probes", "silhouette", "rest"):
        lines.append((f"  of which {part}", der[part], "ms", der[part] / der["total"], None))
    lines += [
        ("(c) naive per-metric pipeline (scaled)", naive, "s", naive / full, ">= 10x ours"),
        (f"(b) best, {n_big} tokens", big_b, "s", None, None),
        (f"(b') best, {n_big} tokens", big_bc, "s", big_bc / big_b, None),
        (f"(b'') best, {n_big} tokens", big_b64, "s", big_b64 / big_b, None),
        (
            f"(a) ours, products only, {n_big} tokens, vs (b'')",
            big_prod,
            "s",
            big_prod / big_b64,
            None,
        ),
        (
            f"(a) ours, full sweep, {n_big} tokens, vs (b)",
            big_full,
            "s",
            big_full / big_b,
            "<= 1.3x",
        ),
        (
            f"(a) ours, full sweep, {n_big} tokens, vs (b'')",
            big_full,
            "s",
            big_full / big_b64,
            None,
        ),
        (
            f"(a) ours, full sweep, {n_big} tokens, vs products only",
            big_full,
            "s",
            big_full / big_prod,
            None,
        ),
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
    return lines


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
