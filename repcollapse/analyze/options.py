"""Analysis options: every knob that changes a metric's value, documented and validated."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from repcollapse.analyze.engine.moments import PRECISIONS
from repcollapse.analyze.engine.xp import BACKENDS


@dataclass(frozen=True)
class Options:
    include_sinks: bool = field(
        default=False, metadata={"help": "keep attention-sink tokens (is_sink) in every selection"}
    )
    precision: str = field(
        default="float32",
        metadata={
            "help": "cross-checkpoint and per-sequence products in float32 (accumulated in "
            "float64) or float64; each checkpoint's own Gram is float64 in both"
        },
    )
    topk: tuple[int, ...] = field(
        default=(1, 10),
        metadata={"help": "k of the topk_var_<k> metrics (10 feeds the collapse index)"},
    )
    sample_per_domain: int = field(
        default=300, metadata={"help": "rows per domain in the seeded probe/silhouette subsample"}
    )
    seed: int = field(
        default=0, metadata={"help": "seed of the subsample, the probe and the label shuffle"}
    )
    lora_k: int = field(
        default=8, metadata={"help": "top-k left singular vectors in the LoRA overlap"}
    )
    temperatures: tuple[float, ...] = field(
        default=(),
        metadata={"help": "also recompute function metrics at these T from hidden states"},
    )
    backend: str = field(default="auto", metadata={"help": "array backend: auto, numpy or cupy"})
    memory_budget_mb: int = field(
        default=1024,
        metadata={
            "help": "accumulator memory per pass (MiB); more checkpoints per layer -> groups"
        },
    )

    uncertainty: bool = field(
        default=False,
        metadata={
            "help": "jackknife confidence intervals of the moment metrics over example groups "
            "(ci_low, ci_high, se, n_groups in metrics.parquet; docs/metrics.md)"
        },
    )
    uncertainty_groups: int = field(
        default=10,
        metadata={"help": "example groups of the delete-a-group jackknife (with --uncertainty)"},
    )

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"Options.precision: expected one of {list(PRECISIONS)}, found {self.precision!r}"
            )
        if self.backend not in BACKENDS:
            raise ValueError(
                f"Options.backend: expected one of {list(BACKENDS)}, found {self.backend!r}"
            )
        bad = [k for k in self.topk if not isinstance(k, int) or k < 1]
        if bad:
            raise ValueError(f"Options.topk: expected positive integers, found {bad}")
        if self.uncertainty_groups < 2:
            raise ValueError(
                f"Options.uncertainty_groups: expected >= 2, found {self.uncertainty_groups}"
            )
        for name in ("sample_per_domain", "lora_k", "memory_budget_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"Options.{name}: expected >= 1, found {getattr(self, name)}")
        bad_t = [t for t in self.temperatures if not t > 0]
        if bad_t:
            raise ValueError(f"Options.temperatures: expected T > 0, found {bad_t}")

    def key(self, params: tuple[str, ...] = ()) -> str:
        """Cache key part for a metric whose value depends on ``params`` (plus sinks, precision;
        and the jackknife groups when uncertainty is on: a row without intervals must not serve
        a run that asks for them. Off, the key is what it was before the option existed)."""
        base: dict[str, Any] = {"include_sinks": self.include_sinks, "precision": self.precision}
        if self.uncertainty:
            base["uncertainty_groups"] = self.uncertainty_groups
        base.update({p: _plain(getattr(self, p)) for p in sorted(params)})
        return json.dumps(base, sort_keys=True, separators=(",", ":"))

    def as_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
