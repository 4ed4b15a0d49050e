"""`repcollapse data`: build the probe corpus, training pools, preference pairs and future tasks."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

_HELP = {
    "seed": "generator seed (default 0)",
    "source": "real: real data sets where a domain has them, generators elsewhere (docs/data.md); "
    "synthetic: generators only; mixed: alternately real and generated (default real)",
    "probe_per_domain": "probe examples per domain (default 100)",
    "pool_train": "train examples per pool",
    "pool_eval": "eval examples per pool",
}


def register(parser: argparse.ArgumentParser) -> None:
    # The flags come from DataConfig's fields, so a new field is a new flag with its default.
    from repcollapse.train.data.config import SOURCES, DataConfig

    sub = parser.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    build = sub.add_parser(
        "build",
        help="write probe.jsonl, pools/, future/ and MANIFEST.json (deterministic)",
        description="Build every data file from one seed: the same seed gives identical bytes.",
    )
    build.add_argument("--out", required=True, help="output directory (created if missing)")
    for f in fields(DataConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        if f.name == "source":
            build.add_argument(flag, choices=SOURCES, default=default, help=_HELP[f.name])
        elif f.name == "probe_extra":
            build.add_argument(flag, default=default, metavar="FILE", help=f.metadata["help"])
        else:
            metavar = "K" if f.name == "probe_per_domain" else None
            build.add_argument(
                flag, type=int, default=default, metavar=metavar, help=_HELP.get(f.name)
            )
    build.set_defaults(handler=_build)

    mp = sub.add_parser(
        "map",
        help="map your own records (chat messages, instruction/input/output, ...) onto the "
        "project's JSONL formats (docs/data.md)",
        description="Read SOURCE (a JSONL file or a datasets save_to_disk directory), map its "
        "columns with --map, validate, and write JSONL in the project's format.",
    )
    mp.add_argument("source", help="JSONL file or save_to_disk directory (one split)")
    mp.add_argument(
        "--map",
        required=True,
        metavar="SPEC",
        dest="mapping",
        help="TARGET=COLUMN pairs, e.g. prompt=instruction,input=input,response=output or "
        "meta.answer=final; 'messages' (or messages=COLUMN) for chat lists",
    )
    mp.add_argument("--kind", choices=("sft", "preference", "probe"), default="sft")
    mp.add_argument("--domain", default="", help="domain of every record (else map domain=COL)")
    mp.add_argument("--id-prefix", default="", help="ids PREFIX-<n> when no id column is mapped")
    mp.add_argument("--out", required=True, help="JSONL file to write")
    mp.set_defaults(handler=_map)


def _build(args: argparse.Namespace) -> int:
    import sys
    import time
    from dataclasses import fields

    from repcollapse.train.data import DataConfig, build_data

    try:
        cfg = DataConfig(**{f.name: getattr(args, f.name) for f in fields(DataConfig)})
    except ValueError as e:
        print(f"repcollapse data build: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    from repcollapse.store_schema.problems import SchemaError

    try:
        manifest = build_data(args.out, cfg)
    except SchemaError as e:  # a bad --probe-extra file: every problem, no traceback
        print(f"repcollapse data build: {e}", file=sys.stderr)
        return 2
    total = sum(manifest["counts"].values())
    print(
        f"wrote {len(manifest['counts'])} files ({total} records) to {args.out} "
        f"in {time.perf_counter() - start:.1f}s ({cfg.source}); probe hash "
        f"{manifest['probe_hash'][:16]}"
    )
    return 0


def _map(args: argparse.Namespace) -> int:
    # Errors (a record that does not fit, a bad --map) are ValueErrors: main prints one line.
    from repcollapse.train.data.mapping import map_records, parse_mapping, write_jsonl

    mapping = parse_mapping(args.mapping, domain=args.domain, id_prefix=args.id_prefix)
    records = map_records(args.source, mapping, kind=args.kind)
    path = write_jsonl(records, args.out)
    print(f"wrote {len(records)} {args.kind} records to {path}")
    return 0
