"""The metric tables of docs/INTERFACES.md: exact columns and dtypes, written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from repcollapse.store_schema.schema import BEHAVIOR, CHECKPOINT_BEHAVIOR_DETAIL, CHECKPOINT_TABLE

METRIC_COLUMNS: dict[str, str] = {
    "metric": "str",
    "metric_version": "int64",
    "store_id": "str",
    "model_family": "str",
    "checkpoint": "str",
    "layer": "int64",
    "domain": "str",
    "span": "str",
    "value": "float64",
    "sinks_excluded": "bool",
    "n_tokens": "int64",
    "se": "float64",
    "ci_low": "float64",
    "ci_high": "float64",
    "n_groups": "int64",
}
"""se, ci_low, ci_high, n_groups: the jackknife interval of a moment metric over example groups
(``analyze metrics --uncertainty``; docs/metrics.md), NaN and 0 where none was computed."""
CHECKPOINT_COLUMNS: tuple[str, ...] = tuple(CHECKPOINT_TABLE)
"""checkpoints.parquet: the store contract's checkpoint table (``store_schema.schema``)."""
OVERLAP_COLUMNS: dict[str, str] = {
    "store_id": "str",
    "model_family": "str",
    "checkpoint_a": "str",
    "checkpoint_b": "str",
    "module": "str",
    "k": "int64",
    "overlap": "float64",
    "baseline": "float64",
}
SPECTRUM_COLUMNS: dict[str, str] = {
    "store_id": "str",
    "model_family": "str",
    "checkpoint": "str",
    "module": "str",
    "block": "int64",
    "index": "int64",
    "singular_value": "float64",
}


def typed(df: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    """``df`` with exactly ``columns``, in order, with their dtypes (strings as object)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"table is missing columns {missing}; expected {list(columns)}")
    out = df[list(columns)].copy()
    for col, dtype in columns.items():
        out[col] = out[col].astype(str) if dtype == "str" else out[col].astype(dtype)
    return out.reset_index(drop=True)


def metrics_frame(
    rows: pd.DataFrame, store_id: str, family: str, sinks_excluded: bool
) -> pd.DataFrame:
    df = rows.assign(store_id=store_id, model_family=family, sinks_excluded=sinks_excluded)
    for col in ("se", "ci_low", "ci_high"):
        df[col] = df.get(col, np.nan)
    df["n_groups"] = df["n_groups"].fillna(0) if "n_groups" in df else 0
    if df.empty:
        return pd.DataFrame(
            {c: pd.Series(dtype=object if t == "str" else t) for c, t in METRIC_COLUMNS.items()}
        )
    df = typed(df, METRIC_COLUMNS)
    return df.sort_values(
        ["checkpoint", "metric", "layer", "domain", "span"], kind="stable"
    ).reset_index(drop=True)


def checkpoints_frame(ds: xr.Dataset, attrs: Mapping[str, Any]) -> pd.DataFrame:
    """One row per complete checkpoint: coords and behaviour (NaN where missing)."""
    n = ds.sizes["checkpoint"]
    data: dict[str, Any] = {
        "store_id": [str(attrs.get("store_id", ""))] * n,
        "model_family": [str(attrs.get("model_family", ""))] * n,
        "model_id": [str(attrs.get("model_id", ""))] * n,
        "checkpoint": ds["name"].values,
    }
    for col in CHECKPOINT_COLUMNS:
        var = f"behavior__{col}"
        if var in BEHAVIOR:  # behaviour a store lacks (an old one) is NaN: not measured
            data[col] = ds[var].values if var in ds else np.full(n, np.nan)
        elif col not in data:
            data[col] = ds[col].values
    table = typed(pd.DataFrame(data), CHECKPOINT_TABLE)
    return pd.concat([table, behavior_detail(ds)], axis=1)


def behavior_detail(ds: xr.Dataset) -> pd.DataFrame:
    """CHECKPOINT_BEHAVIOR_DETAIL from each checkpoint's behavior.json (NaN where absent)."""
    n = ds.sizes["checkpoint"]
    raw = ds["behavior_json"].values if "behavior_json" in ds else [""] * n
    rows = [_json_dict(x) for x in raw]
    return pd.DataFrame(
        {col: [_number(b.get(col)) for b in rows] for col in CHECKPOINT_BEHAVIOR_DETAIL},
        index=range(n),
        dtype="float64",
    )


def _json_dict(raw: Any) -> dict[str, Any]:
    try:
        out = json.loads(str(raw)) if str(raw) else {}
    except json.JSONDecodeError:
        return {}
    return out if isinstance(out, dict) else {}


def _number(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else np.nan


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def write_json(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def write_tables(
    out_dir: str | Path,
    metrics: pd.DataFrame,
    checkpoints: pd.DataFrame,
    overlap: pd.DataFrame,
    spectrum: pd.DataFrame,
    provenance: Mapping[str, Any],
) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out / "metrics.parquet",
        "checkpoints": out / "checkpoints.parquet",
        "lora_overlap": out / "lora_overlap.parquet",
        "lora_spectrum": out / "lora_spectrum.parquet",
        "provenance": out / "provenance.json",
    }
    write_parquet(metrics, paths["metrics"])
    write_parquet(checkpoints, paths["checkpoints"])
    write_parquet(_or_empty(overlap, OVERLAP_COLUMNS), paths["lora_overlap"])
    write_parquet(_or_empty(spectrum, SPECTRUM_COLUMNS), paths["lora_spectrum"])
    write_json(dict(provenance), paths["provenance"])
    return paths


def _or_empty(df: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame(
            {c: pd.Series(dtype=object if t == "str" else t) for c, t in columns.items()}
        )
    return typed(df, columns)
