"""How a sequence is planned and how a stage is identified: the stage plans of a RunConfig
(exact token budgets from the pools), checkpoint names, train seeds, and the stage key that
decides whether a complete stage directory (this run's, or another run's under ``--reuse``)
is the same checkpoint and need not be trained again."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repcollapse.store_schema import naming
from repcollapse.train.config import SFT_DOMAINS, RunConfig, StageSpec
from repcollapse.train.pools import (
    DataDir,
    Selection,
    pair_cost,
    pair_min_cut,
    take_budget,
    truncate_pair,
)


@dataclass
class StagePlan:
    index: int
    spec: StageSpec
    examples: list[dict[str, list[int]]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    tokens: int = 0
    sources: dict[str, int] = field(default_factory=dict)

    @property
    def dirname(self) -> str:
        return f"{self.index:02d}-{self.spec.name}"


def _select(
    data: DataDir, domain: str, budget: int, seed: int, cursors: dict[str, int]
) -> Selection:
    # One fixed permutation per (seed, domain); the cursor makes later stages continue after the
    # examples earlier stages of this sequence already used.
    rng = random.Random(f"{seed}|{domain}")
    recs = data.records(domain, "train")
    ids = [str(r.get("id", i)) for i, r in enumerate(recs)]
    kw: dict[str, Any] = {}
    if domain == "preference":
        kw = {"cost": pair_cost, "truncate": truncate_pair, "min_cut": pair_min_cut}
    sel = take_budget(
        data.encoded(domain, "train"), ids, budget, rng=rng, start=cursors.get(domain, 0), **kw
    )
    cursors[domain] = cursors.get(domain, 0) + sel.consumed
    return sel


def plan_sequence(cfg: RunConfig, data: DataDir) -> list[StagePlan]:
    """Every stage's exact training set (deterministic in the config and the data)."""
    cursors: dict[str, int] = {}
    plans: list[StagePlan] = []
    earlier: list[str] = []
    mit = cfg.mitigation
    for i, spec in enumerate(cfg.expanded_stages(), start=1):
        plan = StagePlan(index=i, spec=spec)
        total = cfg.budget.tokens_per_stage
        if spec.kind == "refresh":
            total = max(cfg.budget.max_length, round(mit.refresh_fraction * total))
        parts: list[tuple[str, int]] = []
        replay_from: list[str] = []
        if mit.replay_fraction > 0 and spec.kind in ("sft", "full"):
            if mit.replay_source == "general":
                # A general stage replaying general data is just a general stage: its data,
                # and so its weights, equal the unmitigated chain's (train run --reuse shares it).
                replay_from = [] if spec.domain == "general" else ["general"]
            elif mit.replay_source == "random":
                # The falsification control: replay from one other SFT domain drawn at random
                # (seeded by the run seed and the stage index), not from a meaningful source.
                others = [d for d in SFT_DOMAINS if d != spec.domain]
                replay_from = [random.Random(f"{cfg.seed}|replay|{i}").choice(others)]
            else:
                replay_from = [d for d in dict.fromkeys(earlier) if d != spec.domain]
        replay = round(mit.replay_fraction * total) if replay_from else 0
        parts.append((spec.domain, total - replay))
        for j, d in enumerate(replay_from):
            share = replay // len(replay_from) + (1 if j < replay % len(replay_from) else 0)
            if share:
                parts.append((d, share))
        for domain, n in parts:
            sel = _select(data, domain, n, cfg.seed, cursors)
            plan.examples.extend(sel.examples)
            plan.ids.extend(sel.ids)
            plan.tokens += sel.tokens
            plan.sources[domain] = plan.sources.get(domain, 0) + sel.tokens
        if spec.kind in ("sft", "full") and spec.domain not in earlier:
            earlier.append(spec.domain)
        plans.append(plan)
    for plan in plans:  # a name that cannot be made fails here, before any stage trains
        checkpoint_name(cfg, plan)
    return plans


def checkpoint_name(cfg: RunConfig, plan: StagePlan) -> str:
    """The stage's typeable checkpoint name, e.g. ``A.replay_general_0.10.s0.02-math``
    (repcollapse.store_schema.naming; a full fine-tuning stage: ``A.full.s0.02-math``)."""
    return naming.checkpoint_name(
        cfg.sequence, cfg.mitigation.name, cfg.seed, plan.index, plan.spec.name, plan.spec.kind
    )


def run_identity(cfg: RunConfig) -> dict[str, Any]:
    """What must match for a complete stage directory to be reused on resumption."""
    d = cfg.to_dict()
    d["budget"].pop("eval", None)  # evaluation sizes do not change the weights
    d.pop("report_to", None)  # nor does where the loss is also logged
    return json.loads(json.dumps(d))  # tuples -> lists, as a manifest read back has them


# Mitigation fields that change how a stage trains on its data (replay changes the data itself,
# which the example ids already capture; refresh is a stage of its own).
_TRAINING_MITIGATION = (
    "diversity_weight",
    "diversity_layers",
    "diversity_variance_floor",
    "decorrelate_weight",
    "decorrelate_k",
    "noop",
)


def train_seed(cfg: RunConfig, plan: StagePlan) -> int:
    """Distinct adapter inits per stage, reproducible from the run seed."""
    return cfg.seed * 1000 + plan.index


def stage_key(cfg: RunConfig, plan: StagePlan, parent_key: str, data: Path) -> str:
    """A fingerprint of everything that determines a stage's weights and its evaluation: the
    parent's key (so the whole lineage), kind, domain, the exact training examples, LoRA and
    budget settings, the training-relevant mitigation fields, the train seed, and the evaluation
    settings and data. Two stages with equal keys produce the same checkpoint (up to the
    nondeterminism of the hardware), whatever their sequence or stage name."""
    mit = cfg.mitigation
    budget = as_plain(cfg.budget)
    evaluation = budget.pop("eval")
    identity = {
        "parent": parent_key,
        "kind": plan.spec.kind,
        "domain": plan.spec.domain,
        "example_ids": plan.ids,
        "tokens": plan.tokens,
        "lora": as_plain(cfg.effective_lora),
        "budget": budget,
        "mitigation": {k: getattr(mit, k) for k in _TRAINING_MITIGATION},
        "train_seed": train_seed(cfg, plan),
        "eval": evaluation,
        "seed": cfg.seed,
        "data_dir": str(data.resolve()),
    }
    text = json.dumps(identity, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def base_key(base: Path) -> str:
    return "base:" + str(base.resolve())


def reusable_stages(reuse_dirs: list[Path]) -> dict[str, Path]:
    """stage_key -> a complete stage directory under ``reuse_dirs`` (searched to any depth).
    Read once per run: a run's own stages never match each other (their lineages differ)."""
    found: dict[str, Path] = {}
    for root in reuse_dirs:
        for mpath in sorted(Path(root).rglob("manifest.json")):
            try:
                stage = json.loads(mpath.read_text()).get("resolved_config", {}).get("stage", {})
            except (OSError, json.JSONDecodeError):
                continue
            if "stage_key" in stage:
                found.setdefault(stage["stage_key"], mpath.parent)
    return found


def copy_stage(src: Path, dst: Path, skip: tuple[str, ...] = ("manifest.json",)) -> None:
    """Every file of ``src`` but the top-level files named in ``skip`` (by default its manifest,
    which the caller writes last) into ``dst`` (hard links where the filesystem allows:
    checkpoints are read-only once complete)."""
    for f in sorted(src.rglob("*")):
        rel = f.relative_to(src)
        if f.is_dir() or (len(rel.parts) == 1 and rel.name in skip):
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, dst / rel)
        except OSError:
            shutil.copy2(f, dst / rel)


def as_plain(obj: Any) -> Any:
    import dataclasses

    d = dataclasses.asdict(obj)
    return json.loads(json.dumps(d))
