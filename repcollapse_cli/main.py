"""`repcollapse`: one CLI, subcommand groups. Thin: parsing here, logic in the packages.

Each group lives in its own module and imports its heavy dependencies inside the handler,
so `repcollapse store ...`, `repcollapse analyze ...` and `repcollapse query ...` never import
torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

GROUPS: dict[str, str] = {
    "data": "build the probe corpus, training pools, preference pairs and future tasks",
    "train": "materialise the base checkpoint and run sequential post-training chains",
    "extract": "run the probe corpus through checkpoints into the activation store",
    "store": "validate and describe an activation store",
    "analyze": "metrics, statistics, figures and the report, from the store alone",
    "query": "run SQL (DuckDB) over the metric tables",
    "demo": "the whole chain end to end on the embedded model",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="repcollapse", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    for name, help_text in GROUPS.items():
        module = importlib.import_module(f"repcollapse_cli.{name}_cmd")
        module.register(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
