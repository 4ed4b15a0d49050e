"""`repcollapse store validate|describe|reserve`."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("validate", help="check a store against the schema; lists every problem")
    p.add_argument("store", help="path or fsspec URL of the store")
    p.add_argument(
        "--quick",
        "--no-values",
        dest="quick",
        action="store_true",
        help="read no chunk: skip the NaN/inf scan of hidden states and the checksum of every "
        "chunk (still checks that each chunk has a checksum and a file)",
    )
    p.set_defaults(handler=_validate)
    p = sub.add_parser(
        "describe", help="checkpoints, layers, features, tokens per domain/span, size"
    )
    p.add_argument("store")
    p.set_defaults(handler=_describe)
    text = (
        "reserve a slot for every checkpoint (creating the store if absent), for workers that "
        "then run `extract --slots-from FILE` without a lock (object stores)"
    )
    p = sub.add_parser(
        "reserve",
        help=text,
        description=f"{text}. Takes extract's own arguments, so the coordinator's command line "
        "is the workers' with `store reserve` in place of `extract` and every checkpoint: the "
        "flags that shape a new store (--max-length, --token-chunk, --hidden-dtype, ...) are "
        "the same; --batch-size is unused here. Loads each checkpoint once to add its "
        "unembedding head. Run it alone, before any worker starts (docs/store.md, Several "
        "writers on an object store).",
    )
    from repcollapse.cli import extract_cmd

    extract_cmd.register(p)
    for action in p._actions:  # argparse has no public accessor; --slots-from is the output here
        if action.dest == "slots_from":
            action.help = argparse.SUPPRESS
    p.add_argument(
        "--out",
        metavar="FILE",
        default=None,
        help="write the slots file here (default: standard output)",
    )
    p.set_defaults(handler=_reserve)


def _validate(args: argparse.Namespace) -> int:
    import sys

    from repcollapse.store_schema.problems import Problem
    from repcollapse.store_schema.validate import validate_store

    warnings: list[Problem] = []
    problems, summary = validate_store(args.store, scan_values=not args.quick, warnings=warnings)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if problems:
        print(f"INVALID {args.store}: {len(problems)} problem(s)")
        for p in problems:
            print(f"  - {p}")
        return 1
    print(f"valid {args.store}: {summary}")
    return 0


def _describe(args: argparse.Namespace) -> int:
    from repcollapse.store_schema.describe import describe_store

    print(describe_store(args.store))
    return 0


def _reserve(args: argparse.Namespace) -> int:
    import dataclasses
    import os
    from pathlib import Path

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as extract: before torch loads
    from repcollapse.extract.job import ExtractConfig
    from repcollapse.extract.reserve import reserve_slots
    from repcollapse.extract.reserved_slots import write_slots_file
    from repcollapse.store_schema.problems import UsageError

    if args.slots_from is not None:
        raise UsageError(
            f"reserve --slots-from: expected none (reserve writes the slots file), "
            f"found {args.slots_from!r}; use --out FILE"
        )
    if args.out is not None and not Path(args.out).absolute().parent.is_dir():
        raise UsageError(  # before the store is touched: a reservation without its file
            f"reserve --out: expected a file in an existing directory, found {args.out!r}"
        )
    # The config from extract's own flags, field by field: a flag extract gains comes along.
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(ExtractConfig)
        if f.init and hasattr(args, f.name)
    }
    config = ExtractConfig(**{**values, "progress": not args.no_progress})
    slots = reserve_slots(args.store, args.probe, args.checkpoints, config)
    if args.out is None:
        print(slots.to_json(), end="")
    else:
        write_slots_file(slots, args.out)
        for s in slots.slots:
            state = " (complete)" if s.complete else ""
            print(f"{s.checkpoint}: slot {s.slot}, head {s.head}{state}")
    return 0
