"""How the figures look and are written: the fixed stage colours, axis labels, PNG scale and
``FiguresConfig`` (a leaf: the command line reads it without importing the figure builders)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import altair as alt

STAGE_COLORS: dict[str, str] = {
    "base": "#7f7f7f",
    "general": "#1f77b4",
    "math": "#d62728",
    "code": "#2ca02c",
    "safety": "#9467bd",
    "long_cot": "#ff7f0e",
    "preference": "#e377c2",
    "refresh": "#17becf",
    "factual": "#bcbd22",
    "control": "#aec7e8",
}
_SPARE = ["#8c564b", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d"]
LABELS: dict[str, str] = {
    "erank_norm": "Eff. rank / min(N-1, d)",
    "pr_norm": "Participation ratio / min(N-1, d)",
    "aniso_centered": "Anisotropy, centred (mean cosine)",
    "aniso_uncentered": "Anisotropy, uncentred (mean cosine)",
    "drift_base": "Drift from base (1 - CKA)",
    "topk_var_10": "Top-10 variance share",
    "entropy": "Logit entropy (nats)",
    "collapse_index": "Collapse index (mean z-score)",
}
SCALE_FACTOR = 1.5


def stage_color(stage: str) -> str:
    """The fixed colour of a stage name; unknown names get a stable spare colour."""
    if stage in STAGE_COLORS:
        return STAGE_COLORS[stage]
    return _SPARE[zlib.crc32(stage.encode()) % len(_SPARE)]


def stage_scale(stages: Sequence[str]) -> alt.Scale:
    names = list(dict.fromkeys(stages))
    return alt.Scale(domain=names, range=[stage_color(s) for s in names])


@dataclass(frozen=True)
class FiguresConfig:
    """How the figures are written (what they show comes from the tables and StatsConfig)."""

    html: bool = field(
        default=True, metadata={"help": "also write each figure as a self-contained HTML page"}
    )
    scale_factor: float = field(
        default=SCALE_FACTOR, metadata={"help": "PNG resolution relative to the chart's size"}
    )

    def __post_init__(self) -> None:
        if not self.scale_factor > 0:
            raise ValueError(
                f"FiguresConfig.scale_factor: expected > 0, found {self.scale_factor!r}"
            )
