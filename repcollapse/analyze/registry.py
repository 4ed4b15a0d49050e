"""The metric registry: every metric a named, versioned, documented entry, in one place.

An entry says what the metric is (``description``), when its definition last changed
(``version``, part of every cache key and of every row of metrics.parquet), which accumulator
inputs it needs (``needs``: the one-pass accumulator builds only what the requested metrics
need), which analysis options its value depends on (``params``: the rest of the cache key),
and at which selections it is reported (``scopes``). Registering a name twice is refused; an
unknown name fails with the closest name and the full list, never a silent None.

Every entry carries its ``compute`` function and the drivers call it for every kind (moment,
function, lora, derived), so a plugin's metric is computed by its own code whatever its kind.
This module imports none of its clients: ``repcollapse.analyze.metrics`` registers the built-in
entries, and ``repcollapse/analyze/__init__.py`` imports it, so that any import of the analysis
package (this module included) finds the built-ins registered.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

KINDS: tuple[str, ...] = ("moment", "function", "lora", "derived")
"""moment: from the one-pass hidden-state accumulator, per (checkpoint, layer, selection);
function: from the stored logit statistics (or recomputed at a temperature), layer -1;
lora: from the stored LoRA factors; derived: from other metrics' rows (collapse index)."""

COMPUTE_SIGNATURES: dict[str, str] = {
    "moment": "f(view: LayerView, selection: (domain, span)) -> float | None",
    "function": "f(sums: FunctionSums) -> float | None",
    "lora": "f(inputs: LoraInputs) -> float | None | {layer: value}",
    "derived": "f(rows: DataFrame) -> DataFrame with columns checkpoint, layer, value[, n_tokens]",
}
"""What each kind's ``compute`` receives and returns (the drivers call it with exactly this).
lora: a float is the checkpoint's layer-free value (layer -1), a mapping gives one row per layer;
derived: ``rows`` are the run's metric rows (columns metric, checkpoint, layer, domain, span,
value, n_tokens) and the result's rows are reported at domain = span = 'all'."""

NEEDS: tuple[str, ...] = (
    "gram",  # per-cell count, sum and Gram (d x d)
    "unit",  # per-cell sum of unit-normalised rows (uncentered anisotropy)
    "centered_unit",  # per-selection sum of unit-normalised centered rows (second pass)
    "cross_base",  # per-cell cross-Gram with the base checkpoint on the same tokens
    "cross_parent",  # per-cell cross-Gram with the parent checkpoint
    "debias",  # per-cell fourth-moment sums of each cross pair and member (debiased CKA)
    "rows",  # seeded per-domain subsample of rows (probe, silhouette)
    "seq",  # per-example token-space Gram (per-sequence effective rank)
    "logit_stats",
    "unembedding",
    "lora",
    "metrics",  # other metrics' rows
)
SCOPES: tuple[str, ...] = ("all", "domain", "span")
"""all: (domain='all', span='all'); domain: (d, 'all') per domain; span: ('all', s) per span."""


@dataclass(frozen=True)
class Metric:
    """One registered metric."""

    name: str
    version: int
    description: str
    kind: str
    needs: tuple[str, ...]
    compute: Callable[..., Any] | None = None
    """Required (None is refused): the signature of its kind, ``COMPUTE_SIGNATURES``."""
    scopes: tuple[str, ...] = ("all", "domain", "span")
    params: tuple[str, ...] = ()
    """Names of ``Options`` fields the value depends on (beyond include_sinks and precision)."""
    requires: tuple[str, ...] = field(default=())
    """Other metrics that must be computed first (derived metrics)."""
    temperature: float | None = None
    """function metrics: the softmax temperature of this variant (None: the stored T = 1
    statistics). A variant is the same entry with this field set (``at_temperature``); its rows
    are named ``<name>@T<T>`` (``row_name``), a name written, never parsed back."""

    @property
    def row_name(self) -> str:
        """The ``metric`` value of this entry's rows in metrics.parquet and the cache."""
        return self.name if self.temperature is None else f"{self.name}@T{self.temperature:g}"

    def at_temperature(self, temperature: float) -> Metric:
        """This function metric recomputed at ``temperature`` (same version and cache params)."""
        if self.kind != "function":
            raise ValueError(
                f"metric {self.name!r}: a temperature applies to kind 'function', found {self.kind!r}"
            )
        return replace(self, temperature=float(temperature))

    def variants(self, temperatures: Iterable[float] = ()) -> list[Metric]:
        """The entry and, for a function metric, its variant at each of ``temperatures``."""
        if self.kind != "function":
            return [self]
        return [self, *(self.at_temperature(t) for t in temperatures)]

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"metric name {self.name!r}: expected letters, digits and '_'")
        if not isinstance(self.version, int) or self.version < 1:
            raise ValueError(
                f"metric {self.name!r}: version must be an int >= 1, found {self.version!r}"
            )
        if not self.description.strip():
            raise ValueError(f"metric {self.name!r}: a description is required")
        if self.kind not in KINDS:
            raise ValueError(
                f"metric {self.name!r}: kind {self.kind!r} is not one of {list(KINDS)}"
            )
        if not callable(self.compute):
            raise ValueError(
                f"metric {self.name!r} (kind {self.kind!r}): expected a compute function "
                f"{COMPUTE_SIGNATURES[self.kind]}, found {self.compute!r}"
            )
        if self.temperature is not None and not (self.kind == "function" and self.temperature > 0):
            raise ValueError(
                f"metric {self.name!r}: temperature expected > 0 on a function metric, found "
                f"{self.temperature!r} on kind {self.kind!r}"
            )
        bad = [n for n in self.needs if n not in NEEDS]
        if bad:
            raise ValueError(f"metric {self.name!r}: needs {bad} not in {list(NEEDS)}")
        bad = [s for s in self.scopes if s not in SCOPES]
        if bad:
            raise ValueError(f"metric {self.name!r}: scopes {bad} not in {list(SCOPES)}")


class UnknownMetricError(LookupError):
    """An unknown metric name; the message names the closest name and all names."""

    def __str__(self) -> str:
        return str(self.args[0])


class MetricRegistry:
    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}

    def register(self, metric: Metric) -> Metric:
        if metric.name in self._metrics:
            old = self._metrics[metric.name]
            if _same_definition(old, metric):
                # the same module imported again (e.g. a plugin re-imported by
                # Client.upload_file in this process): the new objects replace the old ones
                self._metrics[metric.name] = metric
                return metric
            raise ValueError(
                f"metric {metric.name!r} is already registered (version {old.version}); "
                "bump the version of the existing entry instead of registering it twice"
            )
        self._metrics[metric.name] = metric
        return metric

    def get(self, name: str) -> Metric:
        try:
            return self._metrics[name]
        except KeyError:
            pass
        close = difflib.get_close_matches(name, list(self._metrics), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownMetricError(
            f"unknown metric {name!r}; {hint}available: {', '.join(sorted(self._metrics))}"
        )

    def names(self, kind: str | None = None) -> list[str]:
        return [n for n, m in self._metrics.items() if kind is None or m.kind == kind]

    def __iter__(self):  # noqa: ANN204
        return iter(self._metrics.values())

    def __contains__(self, name: object) -> bool:
        return name in self._metrics

    def resolve(self, names: Iterable[str] | None) -> list[Metric]:
        """Entries for ``names`` (all if None) plus everything they require, in registry order."""
        wanted = list(self._metrics) if names is None else list(names)
        seen: set[str] = set()
        stack = list(wanted)
        while stack:
            metric = self.get(stack.pop())
            if metric.name not in seen:
                seen.add(metric.name)
                stack.extend(metric.requires)
        return [m for n, m in self._metrics.items() if n in seen]


def _same_definition(a: Metric, b: Metric) -> bool:
    """Same name, version, kind and compute function (by module and qualified name)."""

    def where(m: Metric) -> tuple[str | None, str | None]:
        f = m.compute
        return getattr(f, "__module__", None), getattr(f, "__qualname__", None)

    return (a.version, a.kind, a.description) == (b.version, b.kind, b.description) and where(
        a
    ) == where(b) != (None, None)


REGISTRY = MetricRegistry()


def register(metric: Metric) -> Metric:
    return REGISTRY.register(metric)


def get(name: str) -> Metric:
    return REGISTRY.get(name)


def names(kind: str | None = None) -> list[str]:
    return REGISTRY.names(kind)


def resolve(metric_names: Iterable[str] | None) -> list[Metric]:
    return REGISTRY.resolve(metric_names)
