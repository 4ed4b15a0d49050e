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
    convention: LayerConvention = field(default_factory=LayerConvention)
    predictors: tuple[str, ...] = PREDICTORS
    controls: tuple[str, ...] = CONTROLS
    response: str = "future_score"
    min_families: int = 3
    """Fewer model families than this: no random effect, fixed-effects OLS instead."""
    alpha: float = 0.05
    """1 - confidence level of every interval."""
    n_resamples: int = 2000
    seed: int = 0
    stage_metrics: tuple[str, ...] = STAGE_METRICS
    control_sequence: str = CONTROL_SEQUENCE


def add_note(notes: Notes, section: str, text: str) -> None:
    if text not in notes.setdefault(section, []):
        notes[section].append(text)
