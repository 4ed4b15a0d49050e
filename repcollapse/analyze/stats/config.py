"""What every statistics module shares: the configuration of a stats run and its notes.

A leaf of ``analyze.stats`` (it imports no other stats module), so regression, effects and
falsification all read it without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from repcollapse.analyze.tables.read import LayerConvention
from repcollapse.store_schema.lineage import CONTROL_SEQUENCE

PREDICTORS: tuple[str, ...] = (
    "erank_norm",
    "aniso_centered",
    "drift_base",
    "entropy",
    "lora_overlap_prev",
)
CONTROLS: tuple[str, ...] = ("target_score", "val_loss", "tokens_seen")
STAGE_METRICS: tuple[str, ...] = (
    "erank_norm",
    "pr_norm",
    "aniso_centered",
    "aniso_uncentered",
    "topk_var_10",
    "drift_base",
    "entropy",
    "collapse_index",
)
Notes = dict[str, list[str]]


@dataclass(frozen=True)
class StatsConfig:
    # metadata["help"]: the command-line help of the field (repcollapse.cli.flags)
    convention: LayerConvention = field(default_factory=LayerConvention)
    predictors: tuple[str, ...] = field(
        default=PREDICTORS, metadata={"help": "collapse metrics in the plasticity regression"}
    )
    controls: tuple[str, ...] = field(
        default=CONTROLS, metadata={"help": "control terms of the regression"}
    )
    response: str = field(
        default="future_score", metadata={"help": "behaviour column the regression explains"}
    )
    min_families: int = field(
        default=3, metadata={"help": "fewest model families for a family random effect"}
    )
    """Fewer model families than this: no random effect, fixed-effects OLS instead."""
    alpha: float = field(default=0.05, metadata={"help": "1 - confidence level of every interval"})
    """1 - confidence level of every interval."""
    n_resamples: int = field(default=2000, metadata={"help": "bootstrap resamples"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap and permutations"})
    stage_metrics: tuple[str, ...] = field(
        default=STAGE_METRICS, metadata={"help": "metrics of the stage and order effects"}
    )
    control_sequence: str = field(
        default=CONTROL_SEQUENCE, metadata={"help": "sequence of the matched-token control"}
    )


def add_note(notes: Notes, section: str, text: str) -> None:
    if text not in notes.setdefault(section, []):
        notes[section].append(text)
