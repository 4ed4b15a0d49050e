"""`repcollapse demo`: the whole chain end to end (see repcollapse/cli/demo.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    parser.add_argument("--model", help="local HF causal-LM directory (default: embedded SmolLM2)")
    parser.add_argument("--budget", default="demo", choices=["demo", "paper"])
    # defaults from DemoSettings, the one place they are set (a default written here once
    # silently overrode a change there)
    from repcollapse.cli.demo import DemoSettings

    d = DemoSettings(out=Path("demo_out"))
    parser.add_argument(
        "--probe-per-domain",
        type=int,
        default=d.probe_per_domain,
        help=f"probe records per domain (default {d.probe_per_domain})",
    )
    parser.add_argument("--token-cap-per-span", type=int, default=d.token_cap_per_span)
    parser.add_argument(
        "--layer-stride",
        type=int,
        default=d.layer_stride,
        help=f"analyse every k-th layer and the last (default {d.layer_stride}; 1 = all; the "
        "store has all)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--uncertainty",
        action="store_true",
        help="jackknife intervals for the geometry (analyze metrics --uncertainty, measured "
        "6.6x slower than without on a small store); the closing summary prints them",
    )
    parser.add_argument(
        "--future-task",
        action="append",
        default=None,
        metavar="NAME",
        help="future task(s) of the behavioural evaluation (repeatable; default: sentiment, the "
        "one SmolLM2 learns at all in the demo budget's 4 adaptation steps; 'all' for every task)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override passed to every `train run` (repeatable)",
    )
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from repcollapse.cli.demo import DemoSettings, run_demo
    from repcollapse.cli.demo_progress import DemoStepError

    settings = DemoSettings(
        out=Path(args.out),
        model=args.model,
        budget=args.budget,
        probe_per_domain=args.probe_per_domain,
        token_cap_per_span=args.token_cap_per_span,
        layer_stride=args.layer_stride,
        seed=args.seed,
        train_overrides=tuple(args.set),
        future_tasks=tuple(args.future_task or DemoSettings.future_tasks),
        uncertainty=args.uncertainty,
    )
    try:
        run_demo(settings)
    except DemoStepError as e:
        # a step's process failed: its own message is in the log tail this carries
        print(f"repcollapse demo: {e}", file=sys.stderr)
        return 1
    return 0
