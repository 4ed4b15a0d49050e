"""`repcollapse demo`: not built yet (see the open issues)."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=_not_built)


def _not_built(args: argparse.Namespace) -> int:
    print("repcollapse demo: not built yet")
    return 2
