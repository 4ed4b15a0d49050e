"""Run configuration: frozen dataclasses validated on construction (TOML loading: config_load).

Every error names the field and the value that is wrong, so a typo in a TOML file is found
before any training starts.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from typing import Any

from repcollapse.store_schema.lineage import NO_MITIGATION, NOOP_MITIGATION
from repcollapse.train.config_checks import check, fail, is_int, is_num
from repcollapse.train.eval_config import EvalSettings

SFT_DOMAINS: tuple[str, ...] = ("general", "math", "code", "safety", "long_cot")
STAGE_DOMAINS: tuple[str, ...] = (*SFT_DOMAINS, "preference")
TRAIN_KINDS: tuple[str, ...] = ("sft", "dpo", "full", "refresh")
TARGET_MODULES: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


REPORT_TO: dict[str, tuple[str, ...]] = {
    # Where the Trainer also sends its loss log, and the packages that must be importable.
    "none": (),
    "tensorboard": ("tensorboard", "tensorboardX"),  # either one (transformers accepts both)
    "wandb": ("wandb",),
}


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 16
    """LoRA rank r of every adapted module."""
    alpha: float = 32.0
    """LoRA alpha; the update is scaled by alpha / rank."""
    dropout: float = 0.05
    """Dropout on the LoRA input during training."""
    target_modules: tuple[str, ...] = TARGET_MODULES
    """Module names (in every block) that get an adapter."""

    def __post_init__(self) -> None:
        check(is_int(self.rank) and self.rank >= 1, "lora.rank", self.rank, "an integer >= 1")
        check(is_num(self.alpha) and self.alpha > 0, "lora.alpha", self.alpha, "a number > 0")
        check(
            is_num(self.dropout) and 0 <= self.dropout < 1,
            "lora.dropout",
            self.dropout,
            "a number in [0, 1)",
        )
        mods = self.target_modules
        check(
            isinstance(mods, tuple) and len(mods) > 0 and all(isinstance(m, str) for m in mods),
            "lora.target_modules",
            mods,
            "a non-empty list of module names",
        )


@dataclass(frozen=True)
class StageSpec:
    name: str
    """Stage name (letters, digits, '_'); the directory is NN-<name>."""
    kind: str
    """sft (LoRA), dpo (LoRA, preference pairs), full (all weights) or refresh (LoRA, general)."""
    domain: str
    """Training pool: general, math, code, safety, long_cot, or preference for dpo."""

    def __post_init__(self) -> None:
        check(
            isinstance(self.name, str) and self.name.replace("_", "").isalnum(),
            "stages[].name",
            self.name,
            "a non-empty name of letters, digits and '_'",
        )
        check(
            self.kind in TRAIN_KINDS,
            f"stages[{self.name}].kind",
            self.kind,
            f"one of {list(TRAIN_KINDS)}",
        )
        check(
            self.domain in STAGE_DOMAINS,
            f"stages[{self.name}].domain",
            self.domain,
            f"one of {list(STAGE_DOMAINS)}",
        )
        if self.kind == "dpo":
            check(
                self.domain == "preference",
                f"stages[{self.name}].domain",
                self.domain,
                "'preference' for a dpo stage",
            )
        else:
            check(
                self.domain in SFT_DOMAINS,
                f"stages[{self.name}].domain",
                self.domain,
                f"an SFT domain {list(SFT_DOMAINS)} for a {self.kind} stage",
            )
        if self.kind == "refresh":
            check(
                self.domain == "general",
                f"stages[{self.name}].domain",
                self.domain,
                "'general' for a refresh stage",
            )


@dataclass(frozen=True)
class Mitigation:
    """Mitigation switches; any combination may be on. ``name`` is what the manifest records."""

    replay_fraction: float = 0.0
    """Share of each stage's token budget replayed from earlier data (0 = off)."""
    replay_source: str = "general"
    """Replay pool: general, earlier (this sequence's earlier SFT domains) or random (one
    other SFT domain drawn per stage: the falsification control)."""
    refresh_after: tuple[str, ...] = ()
    """Stage names after which a general-data refresh stage is inserted."""
    refresh_fraction: float = 0.25
    """A refresh stage's token budget as a share of tokens_per_stage."""
    diversity_weight: float = 0.0
    """Weight of the diversity regulariser: mean pairwise cosine of centred response states
    (0 = off)."""
    diversity_layers: tuple[int, ...] = (-1,)
    """Hidden-state indices the diversity regulariser acts on (0 = embeddings, -1 = last)."""
    diversity_variance_floor: float = 0.0
    """Per-feature std floor of the diversity regulariser's hinge (0 = no hinge)."""
    decorrelate_weight: float = 0.0
    """Weight of the penalty on overlap with earlier stages' LoRA subspaces (0 = off)."""
    decorrelate_k: int = 8
    """Top-k left singular vectors of each earlier adapter spanning the penalised subspace."""
    rank: int = 0
    """0: the LoRA rank of ``[lora]``; > 0: the rank-increase control (alpha / rank is kept)."""
    noop: bool = False
    """The matched no-op control: every stage runs its matched tokens at learning rate 0, so the
    adapter's B stays 0 and the merged weights equal the parent's; metrics must not move."""

    def __post_init__(self) -> None:
        f = self.replay_fraction
        check(is_num(f) and 0 <= f < 1, "mitigation.replay_fraction", f, "a number in [0, 1)")
        check(
            self.replay_source in ("general", "earlier", "random"),
            "mitigation.replay_source",
            self.replay_source,
            "'general', 'earlier' or 'random'",
        )
        check(
            isinstance(self.refresh_after, tuple)
            and all(isinstance(s, str) for s in self.refresh_after),
            "mitigation.refresh_after",
            self.refresh_after,
            "a list of stage names",
        )
        rf = self.refresh_fraction
        check(is_num(rf) and 0 < rf <= 1, "mitigation.refresh_fraction", rf, "a number in (0, 1]")
        for name in ("diversity_weight", "decorrelate_weight", "diversity_variance_floor"):
            v = getattr(self, name)
            check(is_num(v) and v >= 0, f"mitigation.{name}", v, "a number >= 0")
        layers = self.diversity_layers
        check(
            isinstance(layers, tuple) and len(layers) > 0 and all(is_int(x) for x in layers),
            "mitigation.diversity_layers",
            layers,
            "a non-empty list of hidden-state indices (0 = embeddings, -1 = last)",
        )
        check(isinstance(self.noop, bool), "mitigation.noop", self.noop, "true or false")
        k = self.decorrelate_k
        check(is_int(k) and k >= 1, "mitigation.decorrelate_k", k, "an integer >= 1")
        check(is_int(self.rank) and self.rank >= 0, "mitigation.rank", self.rank, "an integer >= 0")

    @property
    def name(self) -> str:
        parts: list[str] = []
        if self.replay_fraction > 0:
            parts.append(f"replay:{self.replay_source}:{self.replay_fraction:.2f}")
        if self.refresh_after:
            parts.append("refresh")
        if self.diversity_weight > 0:
            parts.append(f"diversity:{self.diversity_weight:g}")
        if self.decorrelate_weight > 0:
            parts.append(f"decorrelate:{self.decorrelate_weight:g}")
        if self.rank > 0:
            parts.append(f"rank:{self.rank}")
        if self.noop:
            parts.append(
                NOOP_MITIGATION
            )  # the part repcollapse.store_schema.lineage.is_noop looks for
        return "+".join(parts) or NO_MITIGATION


@dataclass(frozen=True)
class Budget:
    name: str = "demo"
    """Budget name: demo (CPU minutes), paper (GPU) or one defined in the config."""
    tokens_per_stage: int = 1_600
    """Non-padding tokens every stage trains on (prompt + response; DPO: prompt twice + both).
    The demo's 1,600 (~5 optimizer steps of 4 examples) keep a SmolLM2 stage near 30 s of training
    on 2 cores (3,200 took ~50 s and put the demo at 32 minutes)."""
    max_length: int = 256
    """Longest training sequence in tokens (longer examples are truncated)."""
    batch_size: int = 4
    """Examples per optimizer micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    learning_rate: float = 5e-4
    """Learning rate of LoRA SFT and refresh stages."""
    full_learning_rate: float = 2e-5
    """Learning rate of full fine-tuning stages."""
    dpo_learning_rate: float = 5e-5
    """Learning rate of DPO stages."""
    dpo_beta: float = 0.1
    """DPO temperature beta."""
    lr_scheduler: str = "constant_with_warmup"
    """constant, constant_with_warmup, linear or cosine."""
    warmup_ratio: float = 0.1
    """Share of a stage's steps spent warming up (rounded down to whole steps)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    eval: EvalSettings = field(default_factory=EvalSettings)
    """Evaluation sizes: the [budget.<name>.eval] table."""

    def __post_init__(self) -> None:
        for name in ("tokens_per_stage", "max_length", "batch_size", "grad_accum"):
            v = getattr(self, name)
            check(is_int(v) and v >= 1, f"budget.{name}", v, "an integer >= 1")
        for name in (
            "learning_rate",
            "full_learning_rate",
            "dpo_learning_rate",
            "dpo_beta",
            "max_grad_norm",
        ):
            v = getattr(self, name)
            check(is_num(v) and v > 0, f"budget.{name}", v, "a number > 0")
        for name in ("warmup_ratio", "weight_decay"):
            v = getattr(self, name)
            check(is_num(v) and 0 <= v < 1, f"budget.{name}", v, "a number in [0, 1)")
        scheds = ("constant", "constant_with_warmup", "linear", "cosine")
        check(
            self.lr_scheduler in scheds,
            "budget.lr_scheduler",
            self.lr_scheduler,
            f"one of {list(scheds)}",
        )
        check(
            self.tokens_per_stage >= self.max_length,
            "budget.tokens_per_stage",
            self.tokens_per_stage,
            f"at least max_length={self.max_length}",
        )


@dataclass(frozen=True)
class RunConfig:
    sequence: str
    """Sequence name (letters, digits, '-', '_'): RUN_DIR/<sequence>/."""
    stages: tuple[StageSpec, ...]
    """The stages in training order: a list of {name, kind, domain} tables."""
    seed: int = 0
    """Run seed: adapter inits, data order and sampling (--seed overrides)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """The [lora] table."""
    mitigation: Mitigation = field(default_factory=Mitigation)
    """The [mitigation] table."""
    budget: Budget = field(default_factory=Budget)
    """The [budget.<name>] tables; --budget picks one."""
    report_to: str = field(
        default="none",
        metadata={
            "help": "where the Trainer also logs the loss: none, tensorboard (offline event "
            "files under RUN_DIR/<sequence>/tensorboard/) or wandb (when installed); "
            "train_log.json is written either way"
        },
    )

    def __post_init__(self) -> None:
        check(
            self.report_to in REPORT_TO,
            "report_to",
            self.report_to,
            f"one of {list(REPORT_TO)}",
        )
        needs = REPORT_TO[self.report_to]
        if needs and not any(importlib.util.find_spec(m) for m in needs):
            fail(
                "report_to",
                self.report_to,
                f"an installed logger: the package {' or '.join(repr(m) for m in needs)} is not "
                f"installed (pip install {needs[0]}), or report_to = 'none'",
            )
        check(
            isinstance(self.sequence, str)
            and self.sequence.replace("_", "").replace("-", "").isalnum(),
            "sequence",
            self.sequence,
            "a name of letters, digits, '-' and '_'",
        )
        check(is_int(self.seed) and self.seed >= 0, "seed", self.seed, "an integer >= 0")
        check(len(self.stages) > 0, "stages", self.stages, "at least one stage")
        names = [s.name for s in self.stages]
        for n in names:
            check(names.count(n) == 1, "stages[].name", n, "unique stage names")
        for n in self.mitigation.refresh_after:
            check(n in names, "mitigation.refresh_after", n, f"a stage name in {names}")
        if self.mitigation.diversity_weight > 0 or self.mitigation.decorrelate_weight > 0:
            check(
                any(s.kind in ("sft", "refresh", "dpo") for s in self.stages),
                "mitigation",
                self.mitigation.name,
                "a sequence with LoRA stages (regularisers act on LoRA training)",
            )

    @property
    def effective_lora(self) -> LoraSettings:
        """LoRA settings after the rank-increase control (alpha / rank kept fixed)."""
        r = self.mitigation.rank
        if r <= 0 or r == self.lora.rank:
            return self.lora
        return dataclasses.replace(self.lora, rank=r, alpha=self.lora.alpha * r / self.lora.rank)

    def expanded_stages(self) -> tuple[StageSpec, ...]:
        """The stages in training order, with refresh stages inserted after the chosen ones."""
        out: list[StageSpec] = []
        for s in self.stages:
            out.append(s)
            if s.name in self.mitigation.refresh_after:
                out.append(StageSpec(name=f"refresh_{s.name}", kind="refresh", domain="general"))
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mitigation"]["name"] = self.mitigation.name
        return d
