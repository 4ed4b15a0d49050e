"""The notebook API: a store as a labelled xarray Dataset, the tables as data frames.

    import repcollapse as rc
    ds = rc.open_store("exp.zarr")                     # lazy, labelled: checkpoint, layer, token
    ds.hidden.sel(checkpoint="base", layer=3)
    ds.sel(checkpoint="A.s0.02-math")                  # typeable names: [A-Za-z0-9._-]
    rc.sel_checkpoint(ds, "A@s0/02-math")              # either form (stores written before them)
    rc.run_metrics("exp.zarr", "tables/")              # `repcollapse analyze metrics`'s numbers
    long = rc.load_tables("tables/")                   # one row per metric value, with checkpoint
    wide = rc.load_tables("tables/", wide=True)        # one row per checkpoint, one column a metric
    rc.stage_table("tables/")                          # the paper's Table 4 shape

Nothing here computes anything of its own: each function is the one the CLI calls, so a
notebook and the command line cannot disagree. Importing this module needs the analysis extra
(pandas, dask), never torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from repcollapse.analyze.engine.run_state import RunSummary
from repcollapse.analyze.engine.runner import run_metrics as _run_metrics
from repcollapse.analyze.options import Options
from repcollapse.analyze.report.html import stage_table as _stage_table
from repcollapse.analyze.tables.names import LABEL, names_in, typeable_frame
from repcollapse.analyze.tables.read import KEY, LayerConvention, checkpoint_table, read_tables
from repcollapse.store_schema import open_store as _open_store
from repcollapse.store_schema.naming import typeable_mapping

__all__ = ["open_store", "sel_checkpoint", "load_tables", "stage_table", "run_metrics"]


def open_store(path: str | Path, *, include_incomplete: bool = False) -> xr.Dataset:
    """The store as a lazy xarray Dataset with labelled coordinates.

    ``checkpoint`` is indexed by the current form of each name (``ds.sel(checkpoint=
    "A.s0.02-math")``, 'base' for the base: typeable for every name ``train run`` makes, and a
    name given by hand as it is); ``checkpoint_label`` holds the name as stored, also indexed,
    so a store written before typeable names is selected by its old names too
    (``ds.sel(checkpoint_label="A@s0/02-math")``, or either form with ``sel_checkpoint``);
    ``parent`` names the parent in the same form (repcollapse.store_schema.naming). ``layer`` counts from 0 (the
    embeddings) to L; ``token`` is the token's row in the probe, with ``example``, ``domain``,
    ``span`` and ``position`` as coordinates along it. Only complete checkpoints are listed
    unless ``include_incomplete``.
    """
    ds = _open_store(path, include_incomplete=include_incomplete)
    coords: dict[str, Any] = {}
    for dim in ("layer", "token"):
        if dim in ds.dims and dim not in ds.coords:
            coords[dim] = np.arange(ds.sizes[dim])
    stored = [str(x) for x in ds["checkpoint"].values]
    parents = [str(x) for x in ds["parent"].values] if "parent" in ds.variables else []
    mapping = typeable_mapping([*stored, *parents])
    coords["checkpoint"] = ("checkpoint", [mapping[n] for n in stored], ds["checkpoint"].attrs)
    coords[LABEL] = ("checkpoint", np.array(stored, dtype=str), {"long_name": "stored name"})
    ds = ds.assign_coords(coords).set_xindex(LABEL)
    if parents:
        parent = ds["parent"]
        renamed = parent.copy(data=np.array([mapping[p] for p in parents]))
        ds = (
            ds.assign_coords(parent=renamed) if "parent" in ds.coords else ds.assign(parent=renamed)
        )
    return ds


def sel_checkpoint(ds: xr.Dataset, name: str | Sequence[str]) -> xr.Dataset:
    """``ds`` (from ``open_store``) at the checkpoint(s) named either by typeable name or by
    the name as stored (``checkpoint_label``). KeyError naming the available names if none
    matches."""
    wanted = [name] if isinstance(name, str) else list(name)
    typeable = [str(x) for x in ds["checkpoint"].values]
    labels = [str(x) for x in ds[LABEL].values] if LABEL in ds.coords else typeable
    index = {**dict(zip(labels, typeable, strict=True)), **{t: t for t in typeable}}
    missing = [n for n in wanted if n not in index]
    if missing:
        raise KeyError(
            f"checkpoint: expected one of {typeable} (or as stored: {labels}), "
            f"found {missing if len(missing) > 1 else missing[0]!r}"
        )
    keys = [index[n] for n in wanted]
    return ds.sel(checkpoint=keys[0] if isinstance(name, str) else keys)


def load_tables(
    tables_dir: str | Path,
    *,
    wide: bool = False,
    metrics: Sequence[str] | None = None,
    layer: str | int = "mean",
    domain: str = "all",
    span: str = "all",
    option_set: str | None = None,
) -> pd.DataFrame:
    """The metric tables of ``tables_dir`` joined with their checkpoints' columns.

    ``checkpoint`` and ``parent`` hold typeable names, ``checkpoint_label`` the name as stored
    (they differ only in tables of stores written before typeable names).

    Long form (default): every row of metrics.parquet (optionally only ``metrics``) with the
    checkpoint's sequence, stage, seed, mitigation and behaviour columns beside it. ``wide``:
    one row per checkpoint and one column per metric, reduced to one value per checkpoint by the
    layer convention the statistics use (``layer``: 'mean' over layers 1..L, 'middle' or a
    layer number; ``domain`` and ``span`` select the selection). ``option_set``: which
    ``options_key`` of metrics.parquet to use (default: 'default' when present, else the only
    one; several and none named is an error naming them).
    """
    tables = read_tables(tables_dir, option_set)
    if tables.metrics is None or tables.checkpoints is None:
        raise FileNotFoundError(
            f"{str(tables_dir)!r}: expected metrics.parquet and checkpoints.parquet, "
            f"missing {[n for n in ('metrics', 'checkpoints') if n in tables.missing()]}"
        )
    names = list(metrics) if metrics is not None else sorted(tables.metrics["metric"].unique())
    ck = tables.checkpoints
    mapping = names_in([ck["checkpoint"], ck["parent"], tables.metrics["checkpoint"].unique()])
    if wide:
        conv = LayerConvention(layer=layer, domain=domain, span=span, option_set=option_set or "")
        return typeable_frame(checkpoint_table(tables, names, conv), mapping)
    long = tables.metrics[tables.metrics["metric"].isin(names)]
    ck = ck.drop(columns=[c for c in ck.columns if c in long.columns and c not in KEY])
    return typeable_frame(long.merge(ck, on=KEY, how="left").reset_index(drop=True), mapping)


def stage_table(tables_dir: str | Path, sequence: str | None = None) -> pd.DataFrame:
    """The stage table of the report (the paper's Table 4 shape), seeds averaged."""
    return _stage_table(tables_dir, sequence=sequence)


def run_metrics(
    store: str | Path,
    out: str | Path,
    *,
    metrics: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    **options: Any,
) -> RunSummary:
    """Every registered metric (or ``metrics``) of ``store`` into the tables in ``out``.

    ``options`` are the fields of ``repcollapse.analyze.options.Options`` (e.g.
    ``include_sinks=True``, ``precision="float64"``); cached values are reused as on the CLI.
    Unlike the CLI it leaves the process's malloc settings alone (they outlive the call): wrap it
    in ``repcollapse.analyze.engine.allocator.tuned()`` for the CLI's speed.
    """
    return _run_metrics(
        store,
        out,
        metrics=list(metrics) if metrics is not None else None,
        layers=list(layers) if layers is not None else None,
        options=Options(**options),
        log=lambda _msg: None,
    )
