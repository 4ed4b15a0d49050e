"""Which single value per (checkpoint, metric) the checkpoint-level analyses use: the layer
(the mean over layers, the middle one, or a number), domain, span and option set
(``LayerConvention``), stated once for the report (``describe``). ``tables.read`` applies it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from repcollapse.analyze import layers


@dataclass(frozen=True)
class LayerConvention:
    """Which single value per (checkpoint, metric) the checkpoint-level analyses use."""

    layer: str | int = field(
        default="mean",
        metadata={
            "help": "value per checkpoint: 'mean' over layers, 'middle' layer, or a layer number",
            "metavar": "LAYER",
        },
    )
    """'mean' (mean over transformer layers), 'middle' (layer n_layers // 2) or a layer number.
    Metrics with only layer -1 rows (function metrics, LoRA overlap) are used as is; one with
    both (the collapse index) uses its layer-averaged row under 'mean', its per-layer rows else."""
    domain: str = field(default="all", metadata={"help": "probe domain of the metric rows used"})
    span: str = field(default="all", metadata={"help": "token span of the metric rows used"})
    include_embeddings: bool = field(
        default=False, metadata={"help": "let layer 0 (embeddings) enter the layer mean"}
    )
    """Whether layer 0 (embeddings) enters the mean. Off by default: LoRA leaves the embedding
    layer untouched, so including it only dilutes every change."""
    option_set: str = field(
        default="",
        metadata={
            "help": "option set (options_key) of the metric rows used; empty: 'default' when "
            "present, else the only one",
            "metavar": "KEY",
        },
    )
    """Which option set of metrics.parquet the analyses read (``read_tables``); '' picks one."""

    def __post_init__(self) -> None:
        if not (self.layer in ("mean", "middle") or isinstance(self.layer, int)):
            raise ValueError(
                f"LayerConvention.layer: expected 'mean', 'middle' or an int, found {self.layer!r}"
            )

    def describe(self) -> str:
        if self.layer == "mean":
            where = layers.describe(self.include_embeddings)
        elif self.layer == "middle":
            where = "the middle layer (n_layers // 2)"
        else:
            where = f"layer {self.layer}"
        return (
            f"Hidden-state metrics: {where}; domain={self.domain!r}, span={self.span!r}. "
            "Layer-free metrics (logit entropy, LoRA overlap) as reported."
        )
