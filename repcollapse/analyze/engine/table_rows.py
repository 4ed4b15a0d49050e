"""The rows of metrics.parquet: the cached rows valid now, then the derived metrics computed from
them through their registry entries (never cached: they depend on which checkpoints are analysed
together)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pandas as pd

from repcollapse.analyze.engine.cache import ROW_COLUMNS, MetricCache
from repcollapse.analyze.engine.tokens import ALL
from repcollapse.analyze.layers import summary_layers
from repcollapse.analyze.options import Options
from repcollapse.analyze.plugins import metric_failed
from repcollapse.analyze.registry import REGISTRY, Metric
from repcollapse.analyze.tables.write import DEFAULT_OPTION_SET

LAYER_FREE_KINDS: tuple[str, ...] = ("lora",)
"""Kinds whose per-layer rows come from the weights, not the analysed hidden layers: kept
whatever layers the run selects."""
DERIVED_COLUMNS: tuple[str, ...] = ("checkpoint", "layer", "value")
"""Columns a derived metric's result must have (``n_tokens`` is optional, 0 when absent)."""


def valid_rows(
    cache: MetricCache, ckpts: list[str], layers: set[int], options: Options
) -> pd.DataFrame:
    """Cached rows valid now: an entry of the current registry (a function metric also at each of
    ``options.temperatures``) with its current version and options key, at a selected layer."""
    valid: dict[str, tuple[int, str, str]] = {
        v.row_name: (v.version, options.key(v.params), v.kind)
        for m in REGISTRY
        if m.kind != "derived"
        for v in m.variants(options.temperatures)
    }
    frames = []
    for c in ckpts:
        rows = cache.rows(c)
        if rows.empty:
            continue
        ok = [
            name in valid
            and (int(v), k) == valid[name][:2]
            and (int(layer) in layers or int(layer) == -1 or valid[name][2] in LAYER_FREE_KINDS)
            for name, v, k, layer in zip(
                rows["metric"],
                rows["metric_version"],
                rows["options_key"],
                rows["layer"],
                strict=True,
            )
        ]
        frames.append(rows[ok])
    if not frames:
        return pd.DataFrame(columns=list(ROW_COLUMNS))
    out = pd.concat(frames, ignore_index=True)
    return out.astype(
        {"layer": np.int64, "metric_version": np.int64, "n_tokens": np.int64, "value": np.float64}
    )


def with_derived(rows: pd.DataFrame, options: Options) -> pd.DataFrame:
    """``rows`` and the rows of every registered derived metric, each computed by its entry's
    ``compute`` from the rows before it (registry order: a derived metric may read an earlier
    one's rows), reported at domain = span = 'all'."""
    if rows.empty:
        return rows
    for m in [m for m in REGISTRY if m.kind == "derived"]:
        try:
            out = _checked(m, m.compute(rows))
        except Exception as exc:  # a plugin's bug: name it and stop the run
            raise metric_failed(m, None, -1, (ALL, ALL), exc) from exc
        if out.empty:
            continue
        frame = pd.DataFrame(
            {
                "metric": m.name,
                "metric_version": m.version,
                "options_key": options.key(m.params),
                "checkpoint": out["checkpoint"].astype(str).to_numpy(),
                "layer": out["layer"].astype(np.int64).to_numpy(),
                "domain": ALL,
                "span": ALL,
                "value": out["value"].astype(np.float64).to_numpy(),
                "n_tokens": out.get("n_tokens", 0),
            },
            index=out.index,
        ).astype({"n_tokens": np.int64, "metric_version": np.int64})
        frame = frame[np.isfinite(frame["value"])]
        rows = pd.concat([rows, frame[list(ROW_COLUMNS)]], ignore_index=True)
    return rows


def _checked(m: Metric, out: object) -> pd.DataFrame:
    if not isinstance(out, pd.DataFrame):
        raise TypeError(f"expected a DataFrame, found {type(out).__name__}")
    lacking = [c for c in DERIVED_COLUMNS if c not in out.columns]
    if lacking:
        raise ValueError(
            f"expected columns {list(DERIVED_COLUMNS)} (and optionally n_tokens), "
            f"found {list(out.columns)}: {lacking} missing"
        )
    return out


VALUE_OPTIONS: tuple[str, ...] = (
    "include_sinks",
    "precision",
    "topk",
    "sample_per_domain",
    "seed",
    "lora_k",
    "temperatures",
    "uncertainty",
    "uncertainty_groups",
)
"""The Options fields that change a value in metrics.parquet (backend and memory budget do not:
the numbers agree across them). ``uncertainty_groups`` counts only with ``uncertainty`` on."""


def layer_spec(layers: Iterable[int]) -> str:
    """A layer selection in ranges, e.g. '0-3,6' (empty for none)."""
    out: list[str] = []
    xs = sorted({int(x) for x in layers})
    start = prev = None
    for x in [*xs, None]:
        if start is not None and (x is None or x != prev + 1):
            out.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if x is not None and start is None:
            start = x
        prev = x
    return ",".join(out)


def option_set_key(
    options: Options, layers: Iterable[int], n_layers: int, ckpts: list[str], all_ckpts: list[str]
) -> str:
    """The option set of one run, readable: 'default', or the options that differ from the
    defaults, e.g. 'include_sinks=True;layers=1-2'. The layer and checkpoint selections are part
    of it because the derived rows (the collapse index, z-scored across the checkpoints analysed
    together, averaged over the selected layers) change with them."""
    default = Options()
    parts = []
    for name in VALUE_OPTIONS:
        if name == "uncertainty_groups" and not options.uncertainty:
            continue
        v = getattr(options, name)
        if v != getattr(default, name):
            if isinstance(v, tuple):
                v = ",".join(f"{t:g}" if isinstance(t, float) else str(t) for t in v)
            parts.append(f"{name}={v}")
    chosen = sorted({int(x) for x in layers})
    if chosen != list(range(n_layers)):
        parts.append(f"layers={layer_spec(chosen)}")
    if sorted(ckpts) != sorted(all_ckpts):
        digest = hashlib.sha1("\n".join(sorted(ckpts)).encode()).hexdigest()[:8]
        parts.append(f"checkpoints={len(ckpts)}of{len(all_ckpts)}:{digest}")
    return ";".join(parts) or DEFAULT_OPTION_SET


def option_columns(
    rows: pd.DataFrame, options: Options, layers: Iterable[int], key: str
) -> pd.DataFrame:
    """``rows`` with the columns that say how each value was computed: ``options_key`` (the run's
    option set), ``precision``, ``temperature`` (T of a function metric recomputed at T; NaN for
    every other row) and ``layers`` (the hidden layers a layer-averaged derived row, layer -1,
    averaged: ``summary_layers`` of the selection; empty on every other row)."""
    temps = {
        v.row_name: float(v.temperature)
        for m in REGISTRY
        if m.kind == "function"
        for v in m.variants(options.temperatures)
        if v.temperature is not None
    }
    derived = {m.name for m in REGISTRY if m.kind == "derived"}
    averaged = layer_spec(summary_layers(layers))
    metric = rows["metric"].astype(str)
    return rows.assign(
        options_key=key,
        precision=options.precision,
        temperature=metric.map(temps).astype("float64"),
        layers=np.where(metric.isin(derived) & (rows["layer"] == -1), averaged, ""),
    )
