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


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the field and the value."""


def _fail(field_name: str, value: Any, expected: str) -> None:
    raise ConfigError(f"config field '{field_name}': expected {expected}, found {value!r}")


def _check(cond: bool, field_name: str, value: Any, expected: str) -> None:
    if not cond:
        _fail(field_name, value, expected)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


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
        _check(_is_int(self.rank) and self.rank >= 1, "lora.rank", self.rank, "an integer >= 1")
        _check(_is_num(self.alpha) and self.alpha > 0, "lora.alpha", self.alpha, "a number > 0")
        _check(
            _is_num(self.dropout) and 0 <= self.dropout < 1,
            "lora.dropout",
            self.dropout,
            "a number in [0, 1)",
        )
        mods = self.target_modules
        _check(
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
        _check(
            isinstance(self.name, str) and self.name.replace("_", "").isalnum(),
            "stages[].name",
            self.name,
            "a non-empty name of letters, digits and '_'",
        )
        _check(
            self.kind in TRAIN_KINDS,
            f"stages[{self.name}].kind",
            self.kind,
            f"one of {list(TRAIN_KINDS)}",
        )
        _check(
            self.domain in STAGE_DOMAINS,
            f"stages[{self.name}].domain",
            self.domain,
            f"one of {list(STAGE_DOMAINS)}",
        )
        if self.kind == "dpo":
            _check(
                self.domain == "preference",
                f"stages[{self.name}].domain",
                self.domain,
                "'preference' for a dpo stage",
            )
        else:
            _check(
                self.domain in SFT_DOMAINS,
                f"stages[{self.name}].domain",
                self.domain,
                f"an SFT domain {list(SFT_DOMAINS)} for a {self.kind} stage",
            )
        if self.kind == "refresh":
            _check(
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
        _check(_is_num(f) and 0 <= f < 1, "mitigation.replay_fraction", f, "a number in [0, 1)")
        _check(
            self.replay_source in ("general", "earlier", "random"),
            "mitigation.replay_source",
            self.replay_source,
            "'general', 'earlier' or 'random'",
        )
        _check(
            isinstance(self.refresh_after, tuple)
            and all(isinstance(s, str) for s in self.refresh_after),
            "mitigation.refresh_after",
            self.refresh_after,
            "a list of stage names",
        )
        rf = self.refresh_fraction
        _check(_is_num(rf) and 0 < rf <= 1, "mitigation.refresh_fraction", rf, "a number in (0, 1]")
        for name in ("diversity_weight", "decorrelate_weight", "diversity_variance_floor"):
            v = getattr(self, name)
            _check(_is_num(v) and v >= 0, f"mitigation.{name}", v, "a number >= 0")
        layers = self.diversity_layers
        _check(
            isinstance(layers, tuple) and len(layers) > 0 and all(_is_int(x) for x in layers),
            "mitigation.diversity_layers",
            layers,
            "a non-empty list of hidden-state indices (0 = embeddings, -1 = last)",
        )
        _check(isinstance(self.noop, bool), "mitigation.noop", self.noop, "true or false")
        k = self.decorrelate_k
        _check(_is_int(k) and k >= 1, "mitigation.decorrelate_k", k, "an integer >= 1")
        _check(
            _is_int(self.rank) and self.rank >= 0, "mitigation.rank", self.rank, "an integer >= 0"
        )

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
class EvalSettings:
    n_generate: int = 6
    """Eval records per domain scored from greedy generations (the first n of each eval pool)."""
    max_new_tokens: int = 96
    """A cap: each domain generates at most 1.5x its longest reference response (+8 tokens)."""
    gen_batch_size: int = 40
    """Prompts per generation batch; the domains' prompts share batches (see generate())."""
    n_teacher_forced: int = 6
    """Eval records per domain for validation loss and calibration (teacher forced)."""
    ece_bins: int = 15
    """Equal-width confidence bins of the expected calibration error."""
    future_tasks: tuple[str, ...] = ()
    """Future task names; empty = every task in DATA/future."""
    future_steps: int = 4
    """Optimizer steps of the future-task fine-tune (the adaptability probe)."""
    future_eval_at: tuple[int, ...] = (0, 2, 4)
    """Steps at which the future task is scored (0 first, future_steps last)."""
    future_batch_size: int = 4
    """Batch size of the future-task fine-tune."""
    future_lr: float = 3e-4
    """Learning rate of the future-task fine-tune."""
    future_n_train: int = 64
    """Training items of the future task."""
    future_n_eval: int = 8
    """Held-out items of the future task scored at each evaluation step."""
    future_rank: int = 8
    """LoRA rank of the future-task adapter."""
    future_max_new_tokens: int = 24
    """Future tasks answer with a word or a number: short generations suffice."""
    stop_rules: bool = True
    """End a generation once the part its scorer reads is complete (repcollapse.train.stops);
    false generates every completion to its cap or end of sequence."""
    future_nll_threshold: float = 1.0
    """Held-out NLL per response token (nats) whose first crossing gives ``steps_to_nll``; the
    same for every checkpoint (a property of the protocol, not of the checkpoint). Measured on
    SmolLM2's base at the demo budget (sentiment, 8 items): 1.63 at step 0, 0.70 at 2, 0.26 at 4,
    so 1.0 is crossed inside the budget (step 1.36 +- 0.28) with room to move either way."""

    def __post_init__(self) -> None:
        for name in (
            "n_generate",
            "max_new_tokens",
            "gen_batch_size",
            "ece_bins",
            "future_batch_size",
            "future_n_train",
            "future_n_eval",
            "future_rank",
            "future_max_new_tokens",
        ):
            v = getattr(self, name)
            _check(_is_int(v) and v >= 1, f"eval.{name}", v, "an integer >= 1")
        for name in ("n_teacher_forced", "future_steps"):
            v = getattr(self, name)
            _check(_is_int(v) and v >= 0, f"eval.{name}", v, "an integer >= 0")
        at = self.future_eval_at
        _check(
            isinstance(at, tuple)
            and len(at) >= 2
            and all(_is_int(s) and 0 <= s <= self.future_steps for s in at)
            and list(at) == sorted(set(at))
            and at[0] == 0
            and at[-1] == self.future_steps,
            "eval.future_eval_at",
            at,
            f"increasing step counts from 0 to future_steps={self.future_steps}",
        )
        _check(
            isinstance(self.stop_rules, bool), "eval.stop_rules", self.stop_rules, "true or false"
        )
        _check(
            _is_num(self.future_nll_threshold) and self.future_nll_threshold > 0,
            "eval.future_nll_threshold",
            self.future_nll_threshold,
            "a number > 0 (nats per token)",
        )
        _check(
            _is_num(self.future_lr) and self.future_lr > 0,
            "eval.future_lr",
            self.future_lr,
            "a number > 0",
        )
        _check(
            isinstance(self.future_tasks, tuple)
            and all(isinstance(t, str) for t in self.future_tasks),
            "eval.future_tasks",
            self.future_tasks,
            "a list of task names",
        )


@dataclass(frozen=True)
class Budget:
    name: str = "demo"
    """Budget name: demo (CPU minutes), paper (GPU) or one defined in the config."""
    tokens_per_stage: int = 3_200
    """Non-padding tokens every stage trains on (prompt + response; DPO: prompt twice + both)."""
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
            _check(_is_int(v) and v >= 1, f"budget.{name}", v, "an integer >= 1")
        for name in (
            "learning_rate",
            "full_learning_rate",
            "dpo_learning_rate",
            "dpo_beta",
            "max_grad_norm",
        ):
            v = getattr(self, name)
            _check(_is_num(v) and v > 0, f"budget.{name}", v, "a number > 0")
        for name in ("warmup_ratio", "weight_decay"):
            v = getattr(self, name)
            _check(_is_num(v) and 0 <= v < 1, f"budget.{name}", v, "a number in [0, 1)")
        scheds = ("constant", "constant_with_warmup", "linear", "cosine")
        _check(
            self.lr_scheduler in scheds,
            "budget.lr_scheduler",
            self.lr_scheduler,
            f"one of {list(scheds)}",
        )
        _check(
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
        _check(
            self.report_to in REPORT_TO,
            "report_to",
            self.report_to,
            f"one of {list(REPORT_TO)}",
        )
        needs = REPORT_TO[self.report_to]
        if needs and not any(importlib.util.find_spec(m) for m in needs):
            _fail(
                "report_to",
                self.report_to,
                f"an installed logger: the package {' or '.join(repr(m) for m in needs)} is not "
                f"installed (pip install {needs[0]}), or report_to = 'none'",
            )
        _check(
            isinstance(self.sequence, str)
            and self.sequence.replace("_", "").replace("-", "").isalnum(),
            "sequence",
            self.sequence,
            "a name of letters, digits, '-' and '_'",
        )
        _check(_is_int(self.seed) and self.seed >= 0, "seed", self.seed, "an integer >= 0")
        _check(len(self.stages) > 0, "stages", self.stages, "at least one stage")
        names = [s.name for s in self.stages]
        for n in names:
            _check(names.count(n) == 1, "stages[].name", n, "unique stage names")
        for n in self.mitigation.refresh_after:
            _check(n in names, "mitigation.refresh_after", n, f"a stage name in {names}")
        if self.mitigation.diversity_weight > 0 or self.mitigation.decorrelate_weight > 0:
            _check(
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
