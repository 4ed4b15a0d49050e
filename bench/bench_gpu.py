"""The GPU paths against the CPU paths, on one machine with a GPU: extraction and the analysis.

    python3 -m bench.bench_gpu [--model embedded|tiny|DIR] [--records 48] [--device cuda]
                               [--backend cupy] [--workdir DIR] [--out FILE]

Prepared for a session that is lent a GPU machine (``bench/gpu_device.sh`` runs it there, with
the packages that machine lacks carried as wheels); with ``--device cpu --backend numpy`` it
runs anywhere, which is how the test suite keeps it working (tests/test_bench_gpu.py).

1. **Extraction.** The same probe extracted twice from the same checkpoint: the CPU path
   (float32, ``ExtractConfig(device="cpu")``) and ``--device`` (on CUDA: bf16 autocast, the
   write-behind writer), each into its own store. Figures: the extraction loop's seconds and
   tokens per second of each, and their ratio.
2. **Hidden states.** Per layer, the relative Frobenius error of the device store's hidden
   states against the CPU store's, sink tokens left out (a sink's ~29,000-sized coordinates
   would dominate the norm). The tolerance, ``HIDDEN_TOL`` = 3e-2, is stated before any GPU run:
   bf16 keeps 8 mantissa bits (a relative rounding of 3.9e-3 per operation), compounded over the
   layers of a residual stream.
3. **Metrics on the device.** ``run_metrics`` on the CPU store with the NumPy backend and with
   ``--backend``: every (metric, checkpoint, layer, domain, span) value paired, the worst
   relative difference |a - b| / max(|a|, |b|, 1e-12) against ``METRIC_TOL`` = 1e-4 (the same
   arithmetic in another order of summation; the own Grams are float64 on both).
4. **What bf16 extraction moves.** The device store's metrics (NumPy) against the CPU store's:
   the worst relative difference per metric, reported without a target.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HIDDEN_TOL = 3e-2
METRIC_TOL = 1e-4
KEYS = ["metric", "checkpoint", "layer", "domain", "span", "options_key"]


def extract_once(store: Path, probe: Path, model_dir: Path, device: str) -> dict[str, float]:
    from repcollapse.extract.run import ExtractConfig, extract

    shutil.rmtree(store, ignore_errors=True)
    t0 = time.perf_counter()
    result = extract(store, probe, [model_dir], ExtractConfig(device=device, progress=False))[0]
    return {
        "wall_s": round(time.perf_counter() - t0, 3),
        "loop_s": round(result.probe_seconds, 3),
    }


def hidden_errors(reference: Path, other: Path) -> list[float]:
    """Per layer: ||H_other - H_ref||_F / ||H_ref||_F over the non-sink tokens."""
    from repcollapse.store_schema import open_store

    ref, oth = open_store(reference), open_store(other)
    keep = ~np.asarray(ref["is_sink"].values).astype(bool)
    if not np.array_equal(keep, ~np.asarray(oth["is_sink"].values).astype(bool)):
        raise ValueError(f"{other}: its tokens differ from {reference}'s")
    out = []
    for layer in range(ref.sizes["layer"]):
        a = np.asarray(ref["hidden"].isel(checkpoint=0, layer=layer).values, np.float64)[keep]
        b = np.asarray(oth["hidden"].isel(checkpoint=0, layer=layer).values, np.float64)[keep]
        norm = float(np.linalg.norm(a))
        out.append(float(np.linalg.norm(b - a)) / norm if norm > 0 else 0.0)
    return out


def metrics_of(store: Path, out: Path, backend: str) -> tuple[Any, float]:
    """metrics.parquet of every metric of ``store`` with ``backend``, and the run's seconds."""
    import pandas as pd

    from repcollapse.analyze.engine.runner import run_metrics
    from repcollapse.analyze.options import Options

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    run_metrics(store, out, options=Options(backend=backend), log=lambda _: None)
    return pd.read_parquet(out / "metrics.parquet"), time.perf_counter() - t0


def worst_differences(a: Any, b: Any) -> dict[str, float]:
    """Per metric, the worst |a - b| / max(|a|, |b|, 1e-12) over rows present in both; a row in
    one table only is an error (the two runs must compute the same rows)."""
    merged = a[[*KEYS, "value"]].merge(
        b[[*KEYS, "value"]], on=KEYS, how="outer", suffixes=("_a", "_b"), indicator=True
    )
    lonely = merged[merged["_merge"] != "both"]
    if len(lonely):
        raise ValueError(f"rows in one table only: {lonely[KEYS].head().to_dict('records')}")
    va, vb = merged["value_a"].to_numpy(), merged["value_b"].to_numpy()
    both_nan = np.isnan(va) & np.isnan(vb)
    scale = np.maximum(np.maximum(np.abs(va), np.abs(vb)), 1e-12)
    rel = np.where(both_nan, 0.0, np.abs(va - vb) / scale)
    rel = np.where(np.isnan(rel), np.inf, rel)  # NaN on one side only
    merged["rel"] = rel
    return {k: float(v) for k, v in merged.groupby("metric")["rel"].max().items()}


def run(
    workdir: str | Path,
    model: str | None = "embedded",
    *,
    records: int = 48,
    device: str = "cuda",
    backend: str = "cupy",
) -> dict[str, Any]:
    from bench.bench_extract import _model_dir, _probe

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = _model_dir(workdir, None if model == "tiny" else model)
    probe = _probe(workdir / "probe.jsonl", records)
    cpu_store, dev_store = workdir / "cpu.zarr", workdir / "device.zarr"
    timing = {  # "device" is --device (cpu too, in the test suite's run)
        "cpu": extract_once(cpu_store, probe, model_dir, "cpu"),
        "device": extract_once(dev_store, probe, model_dir, device),
    }
    from repcollapse.store_schema import open_store

    n_tokens = int((~np.asarray(open_store(cpu_store)["is_sink"].values).astype(bool)).sum())
    errors = hidden_errors(cpu_store, dev_store)
    m_np, s_np = metrics_of(cpu_store, workdir / "t_numpy", "numpy")
    m_dev, s_dev = metrics_of(cpu_store, workdir / "t_backend", backend)
    m_ext, _ = metrics_of(dev_store, workdir / "t_device_store", "numpy")
    backend_diff = worst_differences(m_np, m_dev)
    extraction_diff = worst_differences(m_np, m_ext)
    worst_backend = max(backend_diff.values(), default=0.0)
    result: dict[str, Any] = {
        "model": str(model_dir),
        "device": device,
        "backend": backend,
        "records": records,
        "tokens_not_sink": n_tokens,
        "extraction": timing,
        "hidden_rel_error_per_layer": errors,
        "metrics_seconds": {"numpy": round(s_np, 2), "backend": round(s_dev, 2)},
        "metric_rel_diff_backend": backend_diff,
        "metric_rel_diff_extraction": extraction_diff,
        "tolerances": {"hidden": HIDDEN_TOL, "metric": METRIC_TOL},
        "within_tolerance": {
            "hidden": max(errors) <= HIDDEN_TOL,
            "metrics": worst_backend <= METRIC_TOL,
        },
    }
    cpu_loop, dev_loop = timing["cpu"]["loop_s"], timing["device"]["loop_s"]
    result["lines"] = [
        ("extraction loop, CPU path (float32)", cpu_loop, "s", None, None),
        (f"extraction loop, {device} path", dev_loop, "s", cpu_loop / dev_loop, None),
        (f"extraction throughput, {device}", n_tokens / dev_loop, "tok/s", None, None),
        ("hidden states, worst layer's relative error", max(errors), "", None, f"<= {HIDDEN_TOL}"),
        (
            f"metrics: {backend} vs numpy, worst relative diff",
            worst_backend,
            "",
            None,
            f"<= {METRIC_TOL}",
        ),
        (f"metric sweep, {backend}", s_dev, "s", s_np / s_dev, None),
        (
            f"metrics: {device}-extracted vs CPU store, worst relative diff",
            max(extraction_diff.values(), default=0.0),
            "",
            None,
            None,
        ),
    ]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="embedded (SmolLM2), tiny or a dir")
    parser.add_argument("--records", type=int, default=48)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backend", default="cupy", choices=("numpy", "cupy"))
    parser.add_argument("--workdir", default="bench/work/gpu")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    result = run(
        args.workdir, args.model, records=args.records, device=args.device, backend=args.backend
    )
    for label, value, unit, ratio, target in result["lines"]:
        text = f"{label:<58} {value:>11.4g} {unit}"
        text += f"  ratio {ratio:.2f}x" if ratio is not None else ""
        text += f"  (target {target})" if target else ""
        print(text)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    return 0 if all(result["within_tolerance"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
