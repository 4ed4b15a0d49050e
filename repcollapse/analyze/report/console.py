"""The tables summarised as plain text lines, with their uncertainty (what ``repcollapse demo``
prints when it ends): per checkpoint the key behavioural numbers as 'value ± SE (n=N)', and the
geometry at one layer with its jackknife interval where ``analyze metrics --uncertainty``
computed one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from repcollapse.analyze.report.behavior_view import (
    MEASURES,
    checkpoint_labels,
    numeric,
    ordered,
    present,
)
from repcollapse.analyze.report.numbers import with_ci, with_se
from repcollapse.analyze.stats.design import family_key
from repcollapse.analyze.tables.read import read_tables

BEHAVIOUR: tuple[str, ...] = ("target_score", "future_score", "target_nll", "future_nll_auc")
"""The behavioural numbers the console shows (the report's behaviour table has every one)."""
GEOMETRY: dict[str, str] = {
    "erank_norm": "eff. rank",
    "aniso_centered": "anisotropy",
    "cka_base": "CKA to base",
    "drift_base": "drift from base",
}
"""Hidden-state metrics the console shows, as the stage table names them (the drift only where
the tables have no CKA: it is 1 - CKA)."""


def _labels(ck: pd.DataFrame) -> list[str]:
    lab = checkpoint_labels(ck)
    fam = family_key(ck)
    if fam.nunique() > 1:
        lab = fam + " " + lab
    width = max(len(x) for x in lab)
    return [f"  {x:<{width}}  " for x in lab]


def behaviour_lines(ck: pd.DataFrame) -> list[str]:
    """A header, then per checkpoint each of BEHAVIOUR present as 'name value ± SE (n=N)'."""
    measures = [m for m in BEHAVIOUR if m in present(ck)]
    if not measures:
        return ["Behaviour: none measured (no behavioural evaluation in checkpoints.parquet)."]
    d = ordered(ck)
    cols = {m: (numeric(d, m), numeric(d, f"{m}_se"), numeric(d, f"{m}_n")) for m in measures}
    out = ["Behaviour per checkpoint (value ± standard error over items, n items):"]
    for i, head in enumerate(_labels(d)):
        parts = [f"{MEASURES[m]} {with_se(v[i], s[i], n[i])}" for m, (v, s, n) in cols.items()]
        out.append(head + "; ".join(parts))
    return out


def middle_layer(m: pd.DataFrame) -> int | None:
    """The middle one of the analysed transformer layers (not the embeddings, not layer-free)."""
    layers = sorted(int(x) for x in set(m["layer"]) if x > 0)
    return layers[len(layers) // 2] if layers else None


def geometry_lines(metrics: pd.DataFrame | None, ck: pd.DataFrame) -> list[str]:
    """A header, then per checkpoint each of GEOMETRY at the middle analysed layer (domain and
    span 'all') as 'value [ci_low, ci_high]', the value alone where no interval was computed."""
    if metrics is None or metrics.empty:
        return ["Geometry: no metrics.parquet."]
    m = metrics[
        metrics["metric"].isin(list(GEOMETRY))
        & (metrics["domain"] == "all")
        & (metrics["span"] == "all")
    ]
    layer = middle_layer(m)
    if layer is None:
        return ["Geometry: none of " + ", ".join(GEOMETRY) + " per layer in metrics.parquet."]
    m = m[m["layer"] == layer].copy()
    for c in ("ci_low", "ci_high"):
        if c not in m:  # tables written before intervals existed
            m[c] = np.nan
    cell = m.set_index(["store_id", "checkpoint", "metric"])[["value", "ci_low", "ci_high"]]
    cell = cell[~cell.index.duplicated()]
    has_ci = bool(np.isfinite(m["ci_low"].to_numpy(dtype=float)).any())
    why = (
        "95% jackknife interval over probe example groups; anisotropy has none"
        if has_ci
        else "no intervals: 'analyze metrics --uncertainty' (demo --uncertainty) computes them"
    )
    out = [f"Geometry at layer {layer} (domain and span 'all'; {why}):"]
    d = ordered(ck)
    names = [x for x in GEOMETRY if x in set(m["metric"])]
    if "cka_base" in names and "drift_base" in names:
        names.remove("drift_base")
    for (_, r), head in zip(d.iterrows(), _labels(d), strict=True):
        parts = []
        for x in names:
            key = (r["store_id"], r["checkpoint"], x)
            v, lo, hi = cell.loc[key] if key in cell.index else (np.nan, np.nan, np.nan)
            parts.append(f"{GEOMETRY[x]} {with_ci(v, lo, hi)}")
        out.append(head + "; ".join(parts))
    return out


def console_summary(tables_dir: str | Path, option_set: str | None = None) -> list[str]:
    """The behaviour and geometry lines of the tables in ``tables_dir``."""
    tables = read_tables(tables_dir, option_set)
    if tables.checkpoints is None:
        raise FileNotFoundError(f"checkpoints.parquet is missing from {str(tables_dir)!r}")
    ck = tables.checkpoints
    return [*behaviour_lines(ck), "", *geometry_lines(tables.metrics, ck)]
