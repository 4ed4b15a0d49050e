"""Benchmark: the storage / accuracy frontier of the ``hidden`` codecs (deterministic: no times).

    python -m bench.bench_codecs [--model embedded|tiny|DIR] [--records N] [--layers 0,5,...]

For each codec (lossless, bitround:K for K in ``KEEPBITS``, int8-token) the same two checkpoints
are extracted into a store of that codec with ``repcollapse extract``'s own code (``extract`` with
``ExtractConfig(codec=...)``): the model (``embedded``: SmolLM2-135M-Instruct; ``tiny``: a tiny
random Llama, a smoke test) and a copy of it whose weights carry seeded noise (1% of each
tensor's standard deviation: a stand-in for a fine-tuning stage, so CKA and drift compare two
different checkpoints). Every moment metric of the registry (``registry.names("moment")``) is
then computed with ``run_metrics`` (repcollapse.api) on each store, and compared with the
lossless store's values row by row (checkpoint, layer, domain, span).

Reported per codec: bytes per stored activation (the ``hidden`` array's chunk files, and
``hidden_scale``'s for int8-token, over checkpoints x layers x tokens x features) and the worst
relative error |x - x_lossless| / max(|x_lossless|, 1e-6) of each metric over its rows (the
goal: <= 1.1 bytes per activation at <= 1e-3 on every metric), beside the worst error relative
to the metric's largest |value| (for metrics that sit near 0, such as drift between close
checkpoints). Sizes and metric values do not depend on the machine's load, so this may run on a
busy machine. Measured 2026-12-06 on SmolLM2 (docs/store.md, Codecs; bench/results.json): no
codec meets the goal; the documented preset is bitround:7 (1.05 B).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KEEPBITS = (3, 5, 6, 7, 8, 9)
GOAL_BYTES, GOAL_ERROR = 1.1, 1e-3
FLOOR = 1e-6
"""Denominator floor of the relative error (a metric that is exactly 0 in both stores: 0)."""
STAGE = "A/01-noised"


def codecs() -> list[str]:
    return ["lossless", *(f"bitround:{k}" for k in KEEPBITS), "int8-token"]


def _noised_copy(base: Path, out: Path, seed: int = 0, rel: float = 0.01) -> Path:
    """``base`` with seeded Gaussian noise on every weight (``rel`` x the tensor's std), as a
    stage-1 checkpoint of sequence A."""
    import torch
    from transformers import AutoModelForCausalLM

    if (out / "manifest.json").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(base, out)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=gen) * float(p.std()) * rel)
    model.save_pretrained(str(out))
    manifest = json.loads((base / "manifest.json").read_text())
    manifest.update(
        name=STAGE,
        sequence="A",
        stage_index=1,
        stage_kind="sft",
        stage_domain="math",
        parent=manifest["name"],
        tokens_seen=0,
    )
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out


def _hidden_bytes(store: Path) -> int:
    """Chunk files of ``hidden`` and ``hidden_scale`` (metadata documents left out)."""
    return sum(
        f.stat().st_size
        for name in ("hidden", "hidden_scale")
        if (store / name).is_dir()
        for f in (store / name).rglob("*")
        if f.is_file() and f.name != "zarr.json"
    )


def _metrics(store: Path, out: Path, layers: list[int] | None) -> Any:
    """Every moment metric of the registry, through ``run_metrics`` (repcollapse.api)."""
    from repcollapse.analyze import registry
    from repcollapse.api import run_metrics

    run_metrics(store, out, metrics=registry.names("moment"), layers=layers)
    return _read_metrics(out)


def _read_metrics(out: Path) -> Any:
    import pandas as pd

    from repcollapse.analyze import registry

    table = pd.read_parquet(out / "metrics.parquet")
    table = table[table["metric"].isin(registry.names("moment"))]
    return table.set_index(["metric", "checkpoint", "layer", "domain", "span"])["value"]


def errors(values: Any, reference: Any) -> tuple[dict[str, float], dict[str, float]]:
    """Per metric: (worst relative error over its rows, worst error over its rows relative to
    the metric's largest |value|). Rows NaN in both: skipped; NaN or missing on one side only:
    inf. The second measure is for metrics whose values sit near 0 (drift = 1 - CKA between
    near-identical checkpoints), where the first divides by almost nothing."""
    import numpy as np

    a, b = values.sort_index().align(reference.sort_index(), join="outer")
    rel: dict[str, float] = {}
    scaled: dict[str, float] = {}
    for metric in sorted(set(b.index.get_level_values("metric"))):
        x, y = a.xs(metric, level="metric"), b.xs(metric, level="metric")
        both_nan = x.isna() & y.isna()
        x, y = x[~both_nan].to_numpy(), y[~both_nan].to_numpy()
        if np.isnan(x).any() or np.isnan(y).any():
            rel[metric] = scaled[metric] = float("inf")
            continue
        diff = np.abs(x - y)
        rel[metric] = float((diff / np.maximum(np.abs(y), FLOOR)).max()) if len(y) else 0.0
        top = float(np.abs(y).max()) if len(y) else 0.0
        scaled[metric] = float(diff.max() / max(top, FLOOR)) if len(y) else 0.0
    return rel, scaled


def run(
    workdir: str | Path,
    model: str | None = "embedded",
    *,
    records: int = 24,
    max_length: int = 128,
    batch_size: int = 4,
    layers: list[int] | None = None,
    reuse: bool = False,
) -> dict[str, Any]:
    """``model``: 'embedded' (SmolLM2), None or 'tiny' (tiny random Llama), or an HF dir.
    ``layers``: the layers analysed (None: every 5th, and the last). ``reuse``: keep stores and
    tables a previous run of the same arguments left in ``workdir`` (only the comparison is
    redone)."""
    import zarr

    from bench.bench_extract import _model_dir, _probe
    from repcollapse.extract.run import ExtractConfig, extract

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    base = _model_dir(workdir, None if model == "tiny" else model)
    stage = _noised_copy(base, workdir / "noised")
    probe = _probe(workdir / "probe.jsonl", records)
    results: dict[str, Any] = {}
    reference = None
    for codec in codecs():
        tag = codec.replace(":", "")
        store, tables = workdir / f"{tag}.zarr", workdir / f"{tag}-tables"
        if not (reuse and (tables / "metrics.parquet").is_file()):
            shutil.rmtree(store, ignore_errors=True)
            shutil.rmtree(tables, ignore_errors=True)
            config = ExtractConfig(
                batch_size=batch_size, max_length=max_length, codec=codec, progress=False
            )
            extract(store, probe, [base, stage], config)
        n_ckpt, n_layers, n_tok, n_feat = zarr.open_group(str(store), mode="r")["hidden"].shape
        if layers is None:
            layers = sorted({*range(0, n_layers, 5), n_layers - 1})
        if reuse and (tables / "metrics.parquet").is_file():
            values = _read_metrics(tables)
        else:
            values = _metrics(store, tables, layers)
        if reference is None:
            reference = values
        rel, scaled = errors(values, reference)
        worst = max(rel, key=lambda m: rel[m])
        worst_scaled = max(scaled, key=lambda m: scaled[m])
        results[codec] = {
            "bytes_per_activation": _hidden_bytes(store) / (n_ckpt * n_layers * n_tok * n_feat),
            "worst_rel_error": rel[worst],
            "worst_metric": worst,
            "worst_scaled_error": scaled[worst_scaled],
            "worst_scaled_metric": worst_scaled,
            "rel_error": rel,
            "scaled_error": scaled,
        }
        print(
            f"{codec:<12} {results[codec]['bytes_per_activation']:.4f} B/activation, worst "
            f"relative error {rel[worst]:.3g} ({worst}), worst error / metric scale "
            f"{scaled[worst_scaled]:.3g} ({worst_scaled})",
            file=sys.stderr,
            flush=True,
        )
    meeting = [
        c
        for c, r in results.items()
        if r["bytes_per_activation"] <= GOAL_BYTES and r["worst_rel_error"] <= GOAL_ERROR
    ]
    lines = []
    for codec, r in results.items():
        lines.append((f"{codec}: bytes per activation", r["bytes_per_activation"], "B", None, None))
        lines.append(
            (
                f"{codec}: worst rel. error ({r['worst_metric']})",
                r["worst_rel_error"],
                "",
                None,
                f"<= {GOAL_ERROR:g} at <= {GOAL_BYTES} B" if codec != "lossless" else None,
            )
        )
        lines.append(
            (
                f"{codec}: worst error / scale ({r['worst_scaled_metric']})",
                r["worst_scaled_error"],
                "",
                None,
                None,
            )
        )
    return {
        "model": str(base),
        "records": records,
        "max_length": max_length,
        "tokens": int(n_tok),
        "layers_stored": int(n_layers),
        "layers_analysed": layers,
        "features": int(n_feat),
        "checkpoints": int(n_ckpt),
        "codecs": results,
        "meeting_goal": meeting,
        "lines": lines,
    }


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI: before torch is imported
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="embedded (SmolLM2), tiny, or a dir")
    parser.add_argument("--records", type=int, default=24)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--layers", default=None, help="comma-separated (default: every 5th)")
    parser.add_argument("--workdir", default="bench/work/codecs")
    parser.add_argument("--out", default=None, help="also write the result as JSON here")
    parser.add_argument("--reuse", action="store_true", help="keep the stores and tables left")
    args = parser.parse_args(argv)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    out = run(
        args.workdir,
        args.model,
        records=args.records,
        max_length=args.max_length,
        layers=layers,
        reuse=args.reuse,
    )
    for label, value, unit, _, target in out["lines"]:
        text = f"{label:<52} {value:>10.4g} {unit}"
        text += f"  (target {target})" if target else ""
        print(text)
    print(f"meeting the goal: {out['meeting_goal'] or 'none'}")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
