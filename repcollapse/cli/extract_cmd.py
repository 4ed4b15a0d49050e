"""`repcollapse extract`: run the probe corpus through checkpoints into the activation store."""

from __future__ import annotations

import argparse
import os


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoints",
        nargs="+",
        metavar="CHECKPOINT_DIR",
        help="HF causal-LM directories, each with manifest.json (train writes it last)",
    )
    parser.add_argument(
        "--store", required=True, help="path or fsspec URL of the Zarr store (created if absent)"
    )
    parser.add_argument("--probe", required=True, help="probe corpus (probe.jsonl)")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="examples per forward pass (default 8)"
    )
    parser.add_argument(
        "--max-length", type=int, default=512, help="tokens per example, truncated (default 512)"
    )
    parser.add_argument(
        "--token-cap-per-span",
        type=int,
        default=None,
        metavar="N",
        help="store at most N tokens per (domain, span) cell, seeded (default: all tokens)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="splits, token sampler and generation (default 0)"
    )
    parser.add_argument(
        "--generate",
        type=int,
        default=0,
        metavar="N",
        help="also store N sampled completions per prompt per checkpoint (default 0)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto, cpu or cuda (default auto: cuda when present)"
    )
    parser.add_argument(
        "--token-chunk",
        type=int,
        default=4096,
        help="tokens per store chunk (new stores; default 4096)",
    )
    parser.add_argument(
        "--hidden-dtype",
        default="float16",
        choices=("float16", "float32"),
        help="dtype of the stored hidden states, fixed when the store is created (default "
        "float16: |h| up to 65,504; float32: twice the bytes, for families such as Gemma 3 "
        "whose residual stream is larger); an existing store of the other dtype is refused",
    )
    parser.add_argument(
        "--codec",
        default="lossless",
        metavar="CODEC",
        help="codec of the stored hidden states, fixed when the store is created (default "
        "lossless): bitround:K keeps K of float16's 10 mantissa bits (relative error <= "
        "2^-(K+1) per value), int8-token stores int8 values and a float32 scale per token "
        "(error <= scale/2); readers dequantise transparently; an existing store of another "
        "codec is refused (docs/store.md, Codecs)",
    )
    parser.add_argument(
        "--slots-from",
        metavar="FILE",
        default=None,
        help="write each checkpoint only into the slot reserved for it in FILE (written by "
        "`repcollapse store reserve`), taking no lock: several workers on one object store; a "
        "checkpoint not in FILE is refused (docs/store.md, Several writers on an object store)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or log lines")
    parser.set_defaults(handler=_extract)


def _extract(args: argparse.Namespace) -> int:
    # Passive OpenMP waiting (before torch is imported): on a shared CPU, spinning intra-op
    # threads make a forward pass several times slower.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from repcollapse.extract.run import ExtractConfig, extract

    # Errors (a bad flag value: UsageError, exit 2; bad data: SchemaError, exit 1) go to
    # repcollapse.cli.main, which prints them as one line on stderr.
    config = ExtractConfig(
        batch_size=args.batch_size,
        max_length=args.max_length,
        token_cap_per_span=args.token_cap_per_span,
        seed=args.seed,
        generate=args.generate,
        device=args.device,
        token_chunk=args.token_chunk,
        hidden_dtype=args.hidden_dtype,
        codec=args.codec,
        progress=not args.no_progress,
    )
    results = extract(args.store, args.probe, args.checkpoints, config, slots_from=args.slots_from)
    for r in results:
        rate = f", {r.tokens / r.seconds:.0f} tok/s" if r.tokens and r.seconds else ""
        extra = f", generated -> {r.generated}" if r.generated else ""
        print(f"{r.name}: {r.status}{rate}{extra}")
    return 0
