"""The cells of a study in execution order, and the deterministic slice one shard runs.

A cell is one step whose output is complete when its marker exists (written last):

    data                       the data directory (probe, pools, future tasks), shared
    base <family>              checkpoint 0 of a family
    train <family> <config>@s<seed>   one `train run` chain (evaluated), sharing stages by --reuse
    extract <family>           every checkpoint of the family into its store
    metrics <family>           `analyze metrics` of that store into its tables directory
    report                     merged tables, stats, figures and report over every family

Sharding splits the (family, seed) groups: all configs of one family and seed stay on one
machine, so the stages they share (--reuse) are trained once and the parent of every checkpoint
is in the same store. Group k (in family-then-seed order) goes to shard k mod n.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from repcollapse.study.config import StudyConfig, StudyError


@dataclass(frozen=True)
class Cell:
    kind: str
    """data, base, train, extract, metrics or report."""
    family: str = ""
    config: str = ""
    seed: int = -1
    stages: int = 1
    """Units of work, for the ETA: stages of a chain, checkpoints of an extraction or analysis."""

    @property
    def run_name(self) -> str:
        name = self.config.rsplit("/", 1)[-1].removesuffix(".toml")  # a config given by path
        return f"{name}@s{self.seed}"

    @property
    def id(self) -> str:
        if self.kind == "train":
            return f"train/{self.family}/{self.run_name}"
        return f"{self.kind}/{self.family}" if self.family else self.kind

    @property
    def marker_name(self) -> str:
        return self.id.replace("/", "__") + ".json"


@dataclass(frozen=True)
class Shard:
    index: int
    """1-based."""
    count: int

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        if text is None:
            return cls(1, 1)
        m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
        if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
            raise StudyError(f"--shard: expected i/n with 1 <= i <= n (e.g. 2/3), found {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE = Shard(1, 1)
"""The whole study (no --shard)."""


def stage_count(config: str) -> int:
    from repcollapse.train.config_load import load_config

    return len(load_config(config).expanded_stages())


def groups(study: StudyConfig) -> list[tuple[str, int]]:
    return [(f.label, s) for f in study.families for s in study.seeds]


def plan_cells(study: StudyConfig, shard: Shard = WHOLE) -> list[Cell]:
    """The cells this shard runs, in execution order."""
    all_groups = groups(study)
    if shard.count > len(all_groups):
        raise StudyError(
            f"--shard {shard}: expected at most {len(all_groups)} shards (one per family and "
            f"seed: {len(study.families)} x {len(study.seeds)}), found {shard.count}"
        )
    mine = {g for k, g in enumerate(all_groups) if k % shard.count == shard.index - 1}
    stages = {c: stage_count(c) for c in study.configs()}
    cells = [Cell("data")]
    for fam in study.families:
        trains = [
            Cell("train", fam.label, c, s, stages[c])
            for s in study.seeds
            if (fam.label, s) in mine
            for c in study.configs()
        ]
        if not trains:
            continue
        n_ckpt = 1 + sum(t.stages for t in trains)
        cells += [Cell("base", fam.label), *trains]
        cells += [
            Cell("extract", fam.label, stages=n_ckpt),
            Cell("metrics", fam.label, stages=n_ckpt),
        ]
    return [*cells, Cell("report")]
