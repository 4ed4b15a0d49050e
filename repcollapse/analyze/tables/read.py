"""Reading a metric-tables directory and pivoting it into one row per checkpoint.

The tables are the contract of docs/INTERFACES.md (metrics.parquet in long form, checkpoints,
lora_overlap, lora_spectrum, provenance.json). Everything downstream (stats, figures, report)
goes through this module so that the choice of layer, domain and span is made in one place and
stated once (``LayerConvention.describe``, tables.convention).

A checkpoint is keyed by (store_id, checkpoint): names repeat across stores ("base"), and a
parent always lives in the same store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from repcollapse.analyze import layers
from repcollapse.analyze.tables.convention import LayerConvention  # read's public API too
from repcollapse.analyze.tables.write import (
    DEFAULT_OPTION_SET,
    OVERLAP_COLUMNS,
    SPECTRUM_COLUMNS,
    write_json,
)
from repcollapse.store_schema.schema import BEHAVIOR_KEYS, CHECKPOINT_TABLE
from repcollapse.version import code_version

KEY: list[str] = ["store_id", "checkpoint"]
BEHAVIOR: tuple[str, ...] = BEHAVIOR_KEYS
TABLE_FILES: dict[str, str] = {
    "metrics": "metrics.parquet",
    "checkpoints": "checkpoints.parquet",
    "lora_overlap": "lora_overlap.parquet",
    "lora_spectrum": "lora_spectrum.parquet",
}
METRIC_CORE: tuple[str, ...] = (
    "metric",
    "metric_version",
    "store_id",
    "model_family",
    "checkpoint",
    "layer",
    "domain",
    "span",
    "value",
    "sinks_excluded",
    "n_tokens",
)
"""The columns of metrics.parquet every reader relies on. Columns added later to the writer's
contract (``METRIC_COLUMNS``: e.g. uncertainty intervals) are optional on reading, so tables
written before them still read; a missing core column is an error."""
TABLE_COLUMNS: dict[str, Sequence[str]] = {
    "metrics": METRIC_CORE,
    "checkpoints": CHECKPOINT_TABLE,
    "lora_overlap": OVERLAP_COLUMNS,
    "lora_spectrum": SPECTRUM_COLUMNS,
}
"""The columns each table must have (``tables.write``, the writer's contract). A table missing
one is refused naming the file and the column: a silent default (seed 0, mitigation 'none')
would enter the statistics as if it had been measured."""


class TablesError(ValueError):
    """A tables directory or file that cannot be read; the message names the path."""


@dataclass(frozen=True)
class Tables:
    """Everything in one tables directory; a missing table is None (provenance: empty list)."""

    root: Path
    metrics: pd.DataFrame | None
    checkpoints: pd.DataFrame | None
    lora_overlap: pd.DataFrame | None
    lora_spectrum: pd.DataFrame | None
    provenance: list[dict[str, Any]] = field(default_factory=list)
    """One dict of store attrs per store (provenance.json may hold one dict or a list)."""
    option_set: str | None = None
    """The options_key of the metric rows read (None: no metrics.parquet)."""

    def missing(self) -> list[str]:
        return [name for name in TABLE_FILES if getattr(self, name) is None]


_DEFAULT_CONVENTION = LayerConvention()
"""The layer-mean convention on the whole probe (frozen: one instance serves every default)."""


def read_tables(tables_dir: str | Path, option_set: str | None = None) -> Tables:
    """Read whatever tables exist in ``tables_dir`` (none is an error here; callers decide).

    metrics.parquet may hold rows of several option sets (``options_key``: one per
    ``analyze metrics`` run with different options); one is used, never a mix: ``option_set``
    when given, else 'default' when present, else the only one, else each store's own when
    every store holds one and they differ only in their layers (``per_store_layers``). Several
    and no choice is a TablesError naming them."""
    root = Path(tables_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"tables directory {str(root)!r} does not exist")
    frames: dict[str, pd.DataFrame | None] = {}
    for name, fname in TABLE_FILES.items():
        path = root / fname
        frames[name] = _read_table(path, TABLE_COLUMNS[name]) if path.exists() else None
    if frames["checkpoints"] is not None:
        frames["checkpoints"] = _normalise_checkpoints(frames["checkpoints"])
    chosen = None
    if frames["metrics"] is not None:
        m = frames["metrics"]
        own = None if option_set else per_store_layers(m)
        if own is not None:
            keep = m["options_key"].astype(str) == m["store_id"].astype(str).map(own)
            chosen = "per store: " + "; ".join(f"{s} {k}" for s, k in sorted(own.items()))
        else:
            chosen = pick_option_set(m, option_set or None, root / "metrics.parquet")
            keep = m["options_key"] == chosen
        frames["metrics"] = _newest_versions(m[keep])
    return Tables(
        root=root,
        provenance=read_provenance(root / "provenance.json"),
        option_set=chosen,
        **frames,
    )


def option_sets(metrics: pd.DataFrame) -> list[str]:
    """The option sets (``options_key``) whose rows ``metrics`` holds, sorted."""
    return sorted(set(metrics["options_key"].astype(str)))


def _without_layers(key: str) -> str:
    return ";".join(p for p in key.split(";") if not p.startswith("layers="))


def per_store_layers(metrics: pd.DataFrame) -> dict[str, str] | None:
    """Each store's one option set, when the tables hold several option sets only because each
    store was analysed at its own layers (a study's layer stride over models of different
    depths) and nothing else differs; else None (one option set, or a real mix to choose from).
    """
    found = option_sets(metrics)
    if len(found) < 2 or DEFAULT_OPTION_SET in found:
        return None
    by_store = metrics.groupby(metrics["store_id"].astype(str))["options_key"].unique()
    if any(len(keys) != 1 for keys in by_store):
        return None
    own = {sid: str(keys[0]) for sid, keys in by_store.items()}
    return own if len({_without_layers(k) for k in own.values()}) == 1 else None


def pick_option_set(metrics: pd.DataFrame, wanted: str | None, path: Path) -> str:
    """The option set a reader uses: ``wanted``, else 'default' when present, else the only one."""
    found = option_sets(metrics)
    if wanted is not None:
        if wanted not in found:
            raise TablesError(
                f"table {str(path)!r}: option set {wanted!r} not found; it holds {found}"
            )
        return wanted
    if DEFAULT_OPTION_SET in found or not found:
        return DEFAULT_OPTION_SET
    if len(found) == 1:
        return found[0]
    raise TablesError(
        f"table {str(path)!r} holds rows of {len(found)} option sets {found} and none is "
        f"{DEFAULT_OPTION_SET!r}: name one (--option-set KEY, or option_set=KEY)"
    )


def _read_table(path: Path, columns: Iterable[str]) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise TablesError(f"table {str(path)!r}: expected a Parquet file ({exc})") from exc
    for col in df.columns:  # dictionary-encoded labels read as categoricals: plain strings here
        if isinstance(df[col].dtype, pd.CategoricalDtype):
            df[col] = df[col].astype(str)
    if path.name == TABLE_FILES["metrics"] and "options_key" not in df and "sinks_excluded" in df:
        # written before options_key existed: its options are unknown beyond the sinks
        df["options_key"] = np.where(
            df["sinks_excluded"].astype(bool), "unrecorded", "unrecorded;include_sinks=True"
        )
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TablesError(
            f"table {str(path)!r}: missing column(s) {', '.join(map(repr, missing))}; expected "
            f"{list(columns)} (written by 'repcollapse analyze metrics')"
        )
    return df


def read_provenance(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    obj = json.loads(path.read_text())
    if isinstance(obj, list):
        return [dict(o) for o in obj]
    nested = isinstance(obj, dict) and obj and all(isinstance(v, dict) for v in obj.values())
    if nested and "store_id" not in obj:  # {store_id: attrs, ...}
        return [{"store_id": k, **v} for k, v in obj.items()]
    return [dict(obj)] if isinstance(obj, dict) else []


def _normalise_checkpoints(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for col in BEHAVIOR:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in ("sequence", "stage_kind", "stage_domain", "parent", "mitigation"):
        df[col] = df[col].fillna("").astype(str)
    df["mitigation"] = df["mitigation"].replace("", "none")
    df["stage_index"] = df["stage_index"].astype(int)
    df["seed"] = df["seed"].astype(int)
    df["stage"] = stage_names(df)
    return df


def _newest_versions(df: pd.DataFrame) -> pd.DataFrame:
    """Keep the newest metric_version of each metric (tables merged from older runs)."""
    newest = df.groupby("metric")["metric_version"].transform("max")
    return df[df["metric_version"] == newest].reset_index(drop=True)


def stage_names(df: pd.DataFrame) -> pd.Series:
    """The stage name of each checkpoint: the key of the fixed colour map used by every figure."""
    kind = df["stage_kind"].astype(str)
    dom = df["stage_domain"].astype(str)
    name = np.where(dom != "", dom, kind)
    name = np.where(kind == "dpo", "preference", name)
    name = np.where(kind == "refresh", "refresh", name)
    name = np.where((kind == "base") | (df["stage_index"] == 0), "base", name)
    return pd.Series(name, index=df.index, dtype=str)


def select_metrics(
    metrics: pd.DataFrame, names: Iterable[str], conv: LayerConvention = _DEFAULT_CONVENTION
) -> pd.DataFrame:
    """One value per (store_id, checkpoint, metric) under the layer convention (long form)."""
    names = list(names)
    m = metrics[metrics["metric"].isin(names)]
    out = []
    for name, g in m.groupby("metric", sort=False):
        sel = g[(g["domain"] == conv.domain) & (g["span"] == conv.span)]
        if sel.empty:  # a metric not resolved by domain/span (e.g. LoRA overlap) is used as is
            sel = g[(g["domain"] == "all") & (g["span"] == "all")]
        out.append(_pick_layer(sel, conv).assign(metric=name))
    if not out:
        return pd.DataFrame(columns=[*KEY, "metric", "value"])
    return pd.concat(out, ignore_index=True)


def _pick_layer(sel: pd.DataFrame, conv: LayerConvention) -> pd.DataFrame:
    free, sel = sel[sel["layer"] == -1], sel[sel["layer"] >= 0]
    # A metric with a layer-averaged row (-1) uses it for 'mean' (collapse_index has both);
    # a fixed-layer convention uses the per-layer rows wherever the metric has them.
    if sel.empty or (conv.layer == "mean" and not free.empty):
        return free.groupby(KEY, as_index=False)["value"].mean()
    if conv.layer == "mean":
        # the one layer convention (repcollapse.analyze.layers), per store
        keep = sel.groupby("store_id")["layer"].transform(
            lambda x: x.isin(layers.summary_layers(x, conv.include_embeddings))
        )
        chosen = sel[keep.astype(bool)]
    elif conv.layer == "middle":
        mid = sel.groupby("store_id")["layer"].transform("max") // 2
        chosen = sel[sel["layer"] == mid]
    else:
        chosen = sel[sel["layer"] == conv.layer]
    return chosen.groupby(KEY, as_index=False)["value"].mean()


def checkpoint_table(
    tables: Tables, names: Sequence[str], conv: LayerConvention = _DEFAULT_CONVENTION
) -> pd.DataFrame:
    """One row per checkpoint: checkpoints.parquet columns plus one column per metric name.

    A metric absent from metrics.parquet is a column of NaN, so callers can say what is missing.
    """
    if tables.checkpoints is None:
        raise FileNotFoundError(f"checkpoints.parquet is missing from {str(tables.root)!r}")
    ck = tables.checkpoints
    if tables.metrics is not None and len(names):
        long = select_metrics(tables.metrics, names, conv)
        wide = long.pivot_table(index=KEY, columns="metric", values="value", aggfunc="mean")
        ck = ck.merge(wide.reset_index(), on=KEY, how="left")
    for name in names:
        if name not in ck:
            ck[name] = np.nan
    return ck.reset_index(drop=True)


def with_parent(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """Add ``<col>_parent`` and ``delta_<col>`` (value minus the parent's, same store)."""
    par = df[["store_id", "checkpoint", *cols]].rename(
        columns={"checkpoint": "parent", **{c: f"{c}_parent" for c in cols}}
    )
    out = df.merge(par, on=["store_id", "parent"], how="left")
    for c in cols:
        out[f"delta_{c}"] = out[c] - out[f"{c}_parent"]
    return out


def layerwise(
    metrics: pd.DataFrame, names: Iterable[str], domain: str = "all", span: str = "all"
) -> pd.DataFrame:
    """Per-layer values (layer >= 0) of the given metrics for one domain and span."""
    m = metrics[
        metrics["metric"].isin(list(names))
        & (metrics["domain"] == domain)
        & (metrics["span"] == span)
        & (metrics["layer"] >= 0)
    ]
    return m.groupby([*KEY, "metric", "layer"], as_index=False)["value"].mean()


def sinks_excluded(tables: Tables) -> bool | None:
    """True when every metric row excluded attention-sink tokens, None when unknown."""
    if tables.metrics is None or "sinks_excluded" not in tables.metrics:
        return None
    return bool(tables.metrics["sinks_excluded"].all())


STATS_INPUTS = "stats_inputs.json"
"""Written by ``analyze stats`` beside its tables: the option set and the fingerprint of the
metric and checkpoint rows the statistics were computed from, and the code version that did."""
FIGURES_INPUTS = "figures_inputs.json"
"""Written by ``analyze figures`` beside figures.json: the same record for the figures."""
METRIC_SORT: tuple[str, ...] = ("store_id", "checkpoint", "metric", "layer", "domain", "span")


def fingerprint(tables: Tables) -> str:
    """A hash of the rows an analysis reads: the chosen option set's metric rows (in a fixed
    order) and the checkpoint table. Rows of other option sets do not enter, so a run with other
    options leaves it unchanged; any change to the rows read changes it."""
    h = hashlib.sha256()
    for df, key in ((tables.metrics, METRIC_SORT), (tables.checkpoints, KEY)):
        if df is None:
            h.update(b"none")
            continue
        cols = sorted(df.columns)
        d = df[cols].sort_values(list(key), kind="stable").reset_index(drop=True)
        h.update(",".join(cols).encode())
        h.update(pd.util.hash_pandas_object(d, index=False).to_numpy().tobytes())
    return h.hexdigest()


def write_inputs(tables: Tables, path: Path) -> None:
    """Record at ``path`` which rows of ``tables`` a result was computed from."""
    record = {"option_set": tables.option_set, "fingerprint": fingerprint(tables)}
    # which code computed it: a study's cells and its statistics may be run by different commits
    write_json({**record, "tables": str(tables.root), "code_version": code_version()}, path)


def write_stats_inputs(tables: Tables) -> None:
    write_inputs(tables, tables.root / STATS_INPUTS)


def stale_inputs(
    record: Path, tables_dir: str | Path, option_set: str | None, what: str
) -> str | None:
    """Why ``what`` (recorded by ``write_inputs`` at ``record``) no longer matches the tables in
    ``tables_dir`` (None: it matches)."""
    if not record.exists():
        return (
            f"the {what} in {str(record.parent)!r} record no fingerprint of the tables they were "
            f"computed from ({record.name} missing)"
        )
    rec = json.loads(record.read_text())
    tables = read_tables(tables_dir, option_set)
    if rec.get("option_set") != tables.option_set:
        return (
            f"the {what} in {str(record.parent)!r} were computed from option set "
            f"{rec.get('option_set')!r}, not {tables.option_set!r}"
        )
    if rec.get("fingerprint") != fingerprint(tables):
        return (
            f"the {what} in {str(record.parent)!r} are stale: metrics.parquet or "
            f"checkpoints.parquet in {str(tables_dir)!r} changed since they were computed"
        )
    return None


def stale_stats(tables_dir: str | Path, option_set: str | None = None) -> str | None:
    """Why the statistics in ``tables_dir`` no longer match its tables (None: they match)."""
    return stale_inputs(Path(tables_dir) / STATS_INPUTS, tables_dir, option_set, "statistics")
