"""`repcollapse data`: build the probe corpus, training pools, preference pairs and future tasks."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    build = sub.add_parser(
        "build",
        help="write probe.jsonl, pools/, future/ and MANIFEST.json (deterministic)",
        description="Generate every data file from one seed: the same seed gives identical bytes.",
    )
    build.add_argument("--out", required=True, help="output directory (created if missing)")
    build.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    build.add_argument(
        "--probe-per-domain",
        type=int,
        default=100,
        metavar="K",
        help="probe examples per domain (default 100)",
    )
    build.add_argument("--pool-train", type=int, default=400, help="train examples per pool")
    build.add_argument("--pool-eval", type=int, default=60, help="eval examples per pool")
    build.add_argument("--preference-train", type=int, default=400)
    build.add_argument("--preference-eval", type=int, default=60)
    build.add_argument("--future-train", type=int, default=200)
    build.add_argument("--future-eval", type=int, default=60)
    build.set_defaults(handler=_build)


def _build(args: argparse.Namespace) -> int:
    import sys
    import time

    from train.data import DataConfig, build_data

    try:
        cfg = DataConfig(
            seed=args.seed,
            probe_per_domain=args.probe_per_domain,
            pool_train=args.pool_train,
            pool_eval=args.pool_eval,
            preference_train=args.preference_train,
            preference_eval=args.preference_eval,
            future_train=args.future_train,
            future_eval=args.future_eval,
        )
    except ValueError as e:
        print(f"repcollapse data build: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    manifest = build_data(args.out, cfg)
    total = sum(manifest["counts"].values())
    print(
        f"wrote {len(manifest['counts'])} files ({total} records) to {args.out} "
        f"in {time.perf_counter() - start:.1f}s; probe hash {manifest['probe_hash'][:16]}"
    )
    return 0
