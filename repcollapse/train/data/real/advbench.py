"""AdvBench harmful behaviours (520) with harm categories, from pyrit's seed data sets (YAML)."""

from __future__ import annotations

import yaml

from repcollapse.train.data.common import Example
from repcollapse.train.data.real.common import MissingSource, clean, package_file, version_of

DIST = "pyrit"
LICENSE = "MIT"


def source() -> str:
    return f"AdvBench (pyrit {version_of(DIST)})"


def load() -> list[Example]:
    path = package_file(DIST, "datasets/seed_datasets/local/adv_bench.prompt")
    try:
        seeds = yaml.safe_load(path.read_text(encoding="utf-8"))["seeds"]
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise MissingSource(f"{path}: expected YAML with a 'seeds' list: {e}") from e
    src = source()
    out: list[Example] = []
    for seed in seeds:
        prompt = clean(str(seed.get("value", "")))
        if prompt:
            cats = [str(c) for c in seed.get("harm_categories") or []]
            meta = {"dataset": "advbench", "harm_categories": cats}
            out.append(Example(prompt, "", meta, source=src, license=LICENSE))
    return out
