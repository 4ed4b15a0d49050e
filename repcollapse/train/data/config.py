"""Configuration of ``repcollapse data build``: sizes and seed, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

POOL_DOMAINS: tuple[str, ...] = ("general", "math", "code", "safety", "long_cot")
"""Stage domains with an SFT pool (the probe's ``factual`` domain has none)."""

SOURCES: tuple[str, ...] = ("real", "synthetic", "mixed")
"""``real``: real records where a domain has them (docs/data.md), generators elsewhere and once
a source runs dry; ``synthetic``: generators only (the corpus before real data);
``mixed``: alternately a real and a generated record."""

# Upper bounds keep requests inside what the templates can produce without repeating a prompt.
_LIMITS: dict[str, tuple[int, int]] = {
    "probe_per_domain": (1, 1000),
    "pool_train": (1, 5000),
    "pool_eval": (1, 2000),
    "preference_train": (1, 5000),
    "preference_eval": (1, 2000),
    "future_train": (1, 5000),
    "future_eval": (1, 2000),
}


@dataclass(frozen=True)
class DataConfig:
    """Sizes of every generated file; one seed drives everything (same seed, same bytes)."""

    seed: int = field(
        default=0, metadata={"help": "generator seed: the same seed gives the same bytes"}
    )
    source: str = field(
        default="real",
        metadata={"help": "real, synthetic or mixed (docs/data.md)"},
    )
    probe_per_domain: int = field(
        default=100, metadata={"help": "generated probe examples per paper domain"}
    )
    pool_train: int = field(default=400, metadata={"help": "train examples per SFT pool"})
    pool_eval: int = field(default=60, metadata={"help": "eval examples per SFT pool"})
    preference_train: int = field(default=400, metadata={"help": "train preference pairs"})
    preference_eval: int = field(default=60, metadata={"help": "eval preference pairs"})
    future_train: int = field(default=200, metadata={"help": "train items per future task"})
    future_eval: int = field(default=60, metadata={"help": "eval items per future task"})
    probe_extra: str = field(
        default="",
        metadata={
            "help": "a probe JSONL of your own records (any domain names, e.g. medical), "
            "added to the generated probe; '' = none"
        },
    )

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(
                f"DataConfig.source: expected one of {list(SOURCES)}, found {self.source!r}"
            )
        if not isinstance(self.probe_extra, str):
            raise ValueError(
                f"DataConfig.probe_extra: expected a path string, found {self.probe_extra!r}"
            )
        for f in fields(self):
            if f.name in ("source", "probe_extra"):
                continue
            value = getattr(self, f.name)
            # bool is an int subclass; True as a size is a bug, not a 1.
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(
                    f"DataConfig.{f.name}: expected an integer, found {type(value).__name__} {value!r}"
                )
        if self.seed < 0:
            raise ValueError(f"DataConfig.seed: expected >= 0, found {self.seed}")
        for name, (lo, hi) in _LIMITS.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ValueError(
                    f"DataConfig.{name}: expected {lo} <= value <= {hi}, found {value}"
                )
