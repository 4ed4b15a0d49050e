"""`repcollapse analyze metrics|generated|stats|figures|report`: from the store alone, no model stack."""

from __future__ import annotations

import argparse
import sys

from repcollapse.cli import analyze_tables_cmd
from repcollapse.cli.flags import LazyFlagsParser, add_flags, from_args


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=LazyFlagsParser
    )
    p = sub.add_parser(
        "metrics",
        help="every metric of a store in one pass per (checkpoint, layer), cached, into Parquet",
        description=(
            "Write metrics.parquet (long form), checkpoints.parquet, lora_overlap.parquet, "
            "lora_spectrum.parquet and provenance.json to --out. Results are cached in "
            "OUT/cache by (store, checkpoint, metric, version, options): a re-run computes only "
            "what is missing (new checkpoints, layers, metrics, options). metrics.parquet holds "
            "every cached value valid for the current options, so re-running one metric keeps "
            "the table complete."
        ),
    )
    p.add_argument("store", help="path or fsspec URL of the activation store")
    p.add_argument("--out", required=True, help="tables directory (created if missing)")
    p.add_argument(
        "--metrics", nargs="+", metavar="NAME", help="only these (and what they need); default all"
    )
    p.add_argument(
        "--layers",
        nargs="+",
        type=int,
        metavar="L",
        help="hidden layers (negative: from the end); default all",
    )
    p.add_argument(
        "--checkpoints",
        nargs="+",
        metavar="NAME",
        help="complete checkpoints to analyse; default all",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDR",
        help="dask scheduler: 'threads' (default), 'sync', 'local' (a LocalCluster) or the "
        "address of a running dask.distributed scheduler (tcp://host:8786), which must answer "
        "within 5 s",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar on stderr (tasks done of the run's total, elapsed, ETA); default: "
        "the bar when stderr is a terminal, else one log line per batch of passes; "
        "--no-progress: neither",
    )
    p.defer(_options_flags)
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="SPEC",
        help="a .py file or module name that registers metrics, imported first (repeatable; "
        "also $REPCOLLAPSE_METRIC_PLUGINS)",
    )
    p.add_argument("--group", help="store sub-group to analyse (e.g. a generated-output probe)")
    p.add_argument(
        "--recompute", action="store_true", help="ignore the cache for the requested metrics"
    )
    p.add_argument("--list", action="store_true", help="list the registered metrics and exit")
    p.set_defaults(handler=_metrics)

    p = sub.add_parser(
        "generated",
        help="the generated-output probe (extract --generate N): distinct-n and spectra",
        description=(
            "For every complete generated sub-store: distinct-1/2/3 and mean completion length "
            "of the sampled completions (per domain and overall), and the moment metrics of its "
            "tokens (read span 'response' for the generated tokens), into OUT/generated.parquet "
            "(same columns as metrics.parquet; a DuckDB view 'generated' for repcollapse query)."
        ),
    )
    p.add_argument("store", help="path of the activation store")
    p.add_argument("--out", required=True, help="tables directory (created if missing)")
    p.add_argument(
        "--metrics",
        nargs="+",
        metavar="NAME",
        help="moment metrics (default: spectrum and anisotropy, those without a reference)",
    )
    p.add_argument("--layers", nargs="+", type=int, metavar="L", help="default all")
    p.add_argument("--scheduler", metavar="ADDR", help="as for 'analyze metrics'")
    p.set_defaults(handler=_generated)

    analyze_tables_cmd.register(sub)


def _options_flags(p: argparse.ArgumentParser) -> None:
    """Every Options field as a flag (added when 'analyze metrics' is parsed: LazyFlagsParser)."""
    from repcollapse.analyze.engine.moments import PRECISIONS
    from repcollapse.analyze.engine.xp import BACKENDS
    from repcollapse.analyze.options import Options

    add_flags(
        p.add_argument_group("analysis options (Options)"),
        Options,
        overrides={
            "precision": {"choices": tuple(PRECISIONS)},
            "backend": {"choices": tuple(BACKENDS)},
            "topk": {"metavar": "K"},
            "temperatures": {"flag": "--temperature", "metavar": "T"},
            "uncertainty_groups": {"metavar": "G"},
        },
    )


def _metrics(args: argparse.Namespace) -> int:
    from repcollapse.analyze import registry
    from repcollapse.analyze.engine import allocator
    from repcollapse.analyze.engine.runner import run_metrics
    from repcollapse.analyze.options import Options
    from repcollapse.analyze.plugins import MetricFailed, PluginError, load_plugins

    try:
        load_plugins(args.plugin)
    except (PluginError, ValueError) as exc:
        print(f"repcollapse analyze metrics: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for m in registry.REGISTRY:
            print(f"{m.name:<24} v{m.version}  {m.kind:<8} {m.description}")
        return 0
    try:
        if args.metrics:
            for name in args.metrics:
                registry.get(name)
        options = from_args(Options, args)
    except (LookupError, ValueError) as exc:
        print(f"repcollapse analyze metrics: {exc}", file=sys.stderr)
        return 2
    try:
        with allocator.tuned():  # this process ends with the run (engine.allocator)
            summary = run_metrics(
                args.store,
                args.out,
                metrics=args.metrics,
                layers=args.layers,
                checkpoints=args.checkpoints,
                options=options,
                scheduler_address=args.scheduler,
                group=args.group,
                recompute=args.recompute,
                plugins=args.plugin,
                progress=args.progress,
            )
    except MetricFailed as exc:  # a metric's code raised: a failed run, the cache kept
        print(f"repcollapse analyze metrics: {exc}", file=sys.stderr)
        return 1
    except (KeyError, ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"repcollapse analyze metrics: {exc}", file=sys.stderr)
        return 2
    for name, path in summary.tables.items():
        print(f"{name}: {path}")
    return 0


def _generated(args: argparse.Namespace) -> int:
    from repcollapse.analyze.engine.generated import run_generated

    try:
        run_generated(
            args.store,
            args.out,
            metrics=args.metrics,
            layers=args.layers,
            scheduler_address=args.scheduler,
        )
    except (KeyError, ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"repcollapse analyze generated: {exc}", file=sys.stderr)
        return 2
    return 0
