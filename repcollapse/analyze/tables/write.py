"""The metric tables of docs/INTERFACES.md: exact columns and dtypes, written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xarray as xr

from repcollapse.store_schema.schema import (
    BEHAVIOR,
    CHECKPOINT_BEHAVIOR_DETAIL,
    CHECKPOINT_TABLE,
    TRAIN_LOSSES,
)

DEFAULT_OPTION_SET = "default"
"""``options_key`` of the rows computed with the default options over every layer and every
complete checkpoint: the option set readers pick when none is named."""
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
    "options_key": "str",
    "precision": "str",
    "temperature": "float64",
    "layers": "str",
}
"""se, ci_low, ci_high, n_groups: the jackknife interval of a moment metric over example groups
(``analyze metrics --uncertainty``; docs/metrics.md), NaN and 0 where none was computed.
options_key, precision, temperature, layers: how the row was computed (the run's option set;
``repcollapse.analyze.engine.table_rows.option_columns``)."""
METRIC_DOCS: dict[str, tuple[str, str]] = {
    "metric": ("metric name (registry row name; <name>@T<T> for a function metric at T)", ""),
    "metric_version": ("version of the metric's registry entry", ""),
    "store_id": ("store the checkpoint belongs to", ""),
    "model_family": ("model family of the store", ""),
    "checkpoint": ("checkpoint name in the store", ""),
    "layer": ("hidden layer (0 = embeddings); -1 = layer-free or layer-averaged", "layer index"),
    "domain": ("probe domain of the token selection ('all' = every domain)", ""),
    "span": ("token span of the selection ('all' = every span)", ""),
    "value": ("the metric's value (units: docs/metric_registry.md)", "per metric"),
    "sinks_excluded": ("attention-sink tokens were left out of the selection", ""),
    "n_tokens": ("tokens in the selection", "tokens"),
    "se": ("jackknife standard error over example groups (NaN: not computed)", "as value"),
    "ci_low": ("lower end of the jackknife confidence interval", "as value"),
    "ci_high": ("upper end of the jackknife confidence interval", "as value"),
    "n_groups": ("example groups of the jackknife (0: not computed)", "groups"),
    "options_key": (
        "option set of the run that wrote the row: 'default' or the options that differ",
        "",
    ),
    "precision": ("working precision of the cross products", ""),
    "temperature": ("softmax temperature of a function metric recomputed at T (NaN: no T)", ""),
    "layers": ("layers a layer-averaged derived row (layer -1) averaged, e.g. '1-24'", ""),
}
"""Description and unit of each metrics.parquet column, stored in the file's Parquet metadata."""
LABEL_COLUMNS: frozenset[str] = frozenset(
    {
        "metric",
        "store_id",
        "model_family",
        "checkpoint",
        "domain",
        "span",
        "options_key",
        "precision",
        "layers",
        "checkpoint_a",
        "checkpoint_b",
        "module",
    }
)
"""String columns with few distinct values: dictionary-encoded in the Parquet files."""
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
    """``rows`` in the metrics.parquet contract. Rows without the option columns (a caller that
    computed them outside ``run_metrics``) get options_key 'default' when sinks were excluded
    ('include_sinks=True' else), precision 'float32', no temperature and no layers."""
    df = rows.assign(store_id=store_id, model_family=family, sinks_excluded=sinks_excluded)
    defaults = {
        "options_key": DEFAULT_OPTION_SET if sinks_excluded else "include_sinks=True",
        "precision": "float32",
        "temperature": np.nan,
        "layers": "",
    }
    for col, v in defaults.items():
        if col not in df:
            df[col] = v
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
    return pd.concat([table, behavior_detail(ds), train_losses(ds)], axis=1)


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


def train_losses(ds: xr.Dataset) -> pd.DataFrame:
    """The TRAIN_LOSSES column: each checkpoint's training losses from its ``behavior_json``,
    as JSON text ('' where the store recorded none: the base, an older extraction)."""
    n = ds.sizes["checkpoint"]
    raw = ds["behavior_json"].values if "behavior_json" in ds else [""] * n
    col = []
    for b in map(_json_dict, raw):
        losses = b.get(TRAIN_LOSSES)
        ok = isinstance(losses, list) and all(isinstance(x, int | float) for x in losses)
        col.append(json.dumps([float(x) for x in losses]) if ok and losses else "")
    return pd.DataFrame({TRAIN_LOSSES: col}, index=range(n), dtype=object)


def _json_dict(raw: Any) -> dict[str, Any]:
    try:
        out = json.loads(str(raw)) if str(raw) else {}
    except json.JSONDecodeError:
        return {}
    return out if isinstance(out, dict) else {}


def _number(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else np.nan


def write_parquet(
    df: pd.DataFrame, path: Path, docs: Mapping[str, tuple[str, str]] | None = None
) -> None:
    """``df`` to ``path`` atomically; label columns (LABEL_COLUMNS) dictionary-encoded; each
    column's description and unit from ``docs`` in its field metadata and, as one JSON object
    under ``repcollapse.columns``, in the schema metadata."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    fields = []
    for i, f in enumerate(table.schema):
        text = pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
        if f.name in LABEL_COLUMNS and text:
            table = table.set_column(i, f.name, pc.dictionary_encode(table.column(i)))
            f = table.schema.field(i)
        if docs and f.name in docs:
            desc, unit = docs[f.name]
            f = f.with_metadata({"description": desc, "unit": unit})
        fields.append(f)
    meta = dict(table.schema.metadata or {})
    if docs:
        cols = {c: {"description": d, "unit": u} for c, (d, u) in docs.items() if c in df}
        meta[b"repcollapse.columns"] = json.dumps(cols, sort_keys=True).encode()
    table = table.cast(pa.schema(fields, metadata=meta))
    tmp = path.with_suffix(path.suffix + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def merged_metrics(path: Path, new: pd.DataFrame) -> pd.DataFrame:
    """The rows metrics.parquet holds after writing ``new``: the existing rows of every other
    (store_id, options_key) kept unchanged, this run's option set replaced by ``new``.

    A table written before options_key existed labels its rows 'unrecorded' (their options are
    unknown), kept beside the new ones, never mixed with them."""
    if not path.exists():
        return new
    old = pd.read_parquet(path)
    for col in old.columns:
        if isinstance(old[col].dtype, pd.CategoricalDtype):
            old[col] = old[col].astype(str)
    if "options_key" not in old:
        old["options_key"] = np.where(
            old["sinks_excluded"].astype(bool), "unrecorded", "unrecorded;include_sinks=True"
        )
    replaced = set(zip(new["store_id"], new["options_key"], strict=True))
    keep = [
        (s, k) not in replaced
        for s, k in zip(old["store_id"].astype(str), old["options_key"].astype(str), strict=True)
    ]
    old = old[keep]
    if old.empty:
        return new
    for col, dtype in METRIC_COLUMNS.items():
        if col not in old:  # a column added to the contract since: its 'not computed' value
            old[col] = {"float64": np.nan, "int64": 0, "str": "", "bool": False}[dtype]
    merged = pd.concat([typed(old, METRIC_COLUMNS), new], ignore_index=True)
    return merged.sort_values(
        ["options_key", "checkpoint", "metric", "layer", "domain", "span"], kind="stable"
    ).reset_index(drop=True)


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
    write_parquet(merged_metrics(paths["metrics"], metrics), paths["metrics"], METRIC_DOCS)
    write_parquet(checkpoints, paths["checkpoints"])
    write_parquet(_or_empty(overlap, OVERLAP_COLUMNS), paths["lora_overlap"])
    write_parquet(_or_empty(spectrum, SPECTRUM_COLUMNS), paths["lora_spectrum"])
    write_json(merged_provenance(paths["provenance"], provenance), paths["provenance"])
    return paths


def merged_provenance(path: Path, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """``provenance`` with ``analyses``: the ``analysis`` record of every option set whose rows
    metrics.parquet holds for this store (this run's replaces its own set's; earlier runs' of
    other sets are kept from the file), so each row's option set stays described."""
    out = dict(provenance)
    analysis = out.get("analysis")
    if not isinstance(analysis, Mapping) or "options_key" not in analysis:
        return out
    old: Any = {}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = {}
    same = isinstance(old, dict) and old.get("store_id") == out.get("store_id")
    kept = old.get("analyses", {}) if same and isinstance(old.get("analyses"), dict) else {}
    out["analyses"] = {**kept, str(analysis["options_key"]): dict(analysis)}
    return out


def _or_empty(df: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame(
            {c: pd.Series(dtype=object if t == "str" else t) for c, t in columns.items()}
        )
    return typed(df, columns)
