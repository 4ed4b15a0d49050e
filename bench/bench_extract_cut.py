"""Extraction of one checkpoint with and without the cut-and-sort schedule, side by side.

    python -m bench.bench_extract_cut --checkpoint DIR --probe PROBE.jsonl [--cap 250] [--repeats 2]

Runs ``repcollapse.extract.run.extract`` (the code path of ``repcollapse extract`` and of the
demo) into fresh stores, alternating the plain schedule (whole sequences, consecutive batches:
what extraction ran before) and the default one (each sequence cut after its last stored token,
batched by length), ``--repeats`` times each. Prints the wall and process-CPU seconds of the
probe (forward, statistics, writes; model loading excluded) per run, the forward's token
counts, and how far the two stores' values are apart.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
from pathlib import Path


def _tokens(checkpoint: Path, probe: Path, cap: int | None, batch_size: int) -> dict[str, int]:
    from transformers import AutoTokenizer

    from repcollapse.extract.forward import plan_windows
    from repcollapse.extract.tokens import build_plan
    from repcollapse.store_schema.records import read_probe_jsonl

    tok = AutoTokenizer.from_pretrained(str(checkpoint))
    ex = build_plan(
        tok, read_probe_jsonl(probe), max_length=512, token_cap_per_span=cap, seed=0
    ).examples
    out = {"stored": sum(len(e.keep) for e in ex)}
    for label, cut, by_length in (("plain", False, False), ("cut", True, True)):
        run = [len(e.input_ids) if not cut else e.run_length for e in ex]
        padded = sum(
            len(b) * max(run[i] for i in b)
            for _, batches in plan_windows(ex, batch_size, cut=cut, by_length=by_length)
            for b in batches
        )
        out[f"{label}_run"], out[f"{label}_padded"] = sum(run), padded
    return out


def _compare(a: Path, b: Path) -> dict[str, float]:
    import numpy as np

    from repcollapse.store_schema import open_store

    x, y = open_store(a).isel(checkpoint=0), open_store(b).isel(checkpoint=0)
    out: dict[str, float] = {}
    ha, hb = x["hidden"].values.astype(np.float32), y["hidden"].values.astype(np.float32)
    out["hidden_equal_fraction"] = float((ha == hb).mean())
    diff = np.abs(ha - hb)
    ulp = np.spacing(np.abs(hb).astype(np.float16)).astype(np.float32)
    out["hidden_within_1_f16_ulp_fraction"] = float((diff <= ulp).mean())
    # near zero an ulp is tiny: also relative to each layer's largest |h|
    scale = np.abs(hb).max(axis=(1, 2), keepdims=True)
    out["hidden_max_diff_over_layer_max"] = float((diff / scale).max())
    out["hidden_max_abs_diff"] = float(diff.max())
    for name in ("logit_entropy", "logit_target_logprob", "logit_top1_prob"):
        out[f"{name}_max_abs_diff"] = float(np.nanmax(np.abs(x[name].values - y[name].values)))
    for name in ("logit_argmax_id", "target_id", "token_id", "position"):
        out[f"{name}_equal"] = float(np.array_equal(x[name].values, y[name].values))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--probe", type=Path, required=True)
    parser.add_argument("--cap", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from repcollapse.extract import forward
    from repcollapse.extract.run import ExtractConfig, extract

    print(_tokens(args.checkpoint, args.probe, args.cap, args.batch_size), flush=True)
    config = ExtractConfig(
        token_cap_per_span=args.cap, batch_size=args.batch_size, device="cpu", progress=False
    )
    original = forward.iterate_outputs
    plain = functools.partial(original, cut=False, by_length=False)
    work = Path(tempfile.mkdtemp(prefix="bench_cut_"))
    stores: dict[str, Path] = {}
    try:
        for rep in range(args.repeats):
            order = ("plain", "cut") if rep % 2 == 0 else ("cut", "plain")
            for label in order:
                store = work / f"{label}{rep}.zarr"
                forward.iterate_outputs = plain if label == "plain" else original
                try:
                    (result,) = extract(store, args.probe, [args.checkpoint], config)
                finally:
                    forward.iterate_outputs = original
                stores.setdefault(label, store)
                print(
                    f"run {rep} {label:5s}: probe {result.probe_seconds:6.1f} s wall, "
                    f"{result.probe_cpu_seconds:6.1f} s CPU ({result.tokens} tokens)",
                    flush=True,
                )
        print(_compare(stores["cut"], stores["plain"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
