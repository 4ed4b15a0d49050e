"""The rows of metrics.parquet: the cached rows valid now, then the derived metrics computed from
them through their registry entries (never cached: they depend on which checkpoints are analysed
together)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from repcollapse.analyze.engine.cache import ROW_COLUMNS, MetricCache
from repcollapse.analyze.engine.tokens import ALL
from repcollapse.analyze.options import Options
from repcollapse.analyze.plugins import metric_failed
from repcollapse.analyze.registry import REGISTRY, Metric

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
