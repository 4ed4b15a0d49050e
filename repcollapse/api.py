"""The notebook API: a store as a labelled xarray Dataset, the tables as data frames.

    import repcollapse as rc
    ds = rc.open_store("exp.zarr")                     # lazy, labelled: checkpoint, layer, token
    ds.hidden.sel(checkpoint="base", layer=3)
    rc.run_metrics("exp.zarr", "tables/")              # the same as `repcollapse analyze metrics`
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

from repcollapse.analyze.engine.runner import RunSummary
from repcollapse.analyze.engine.runner import run_metrics as _run_metrics
from repcollapse.analyze.options import Options
from repcollapse.analyze.report.html import stage_table as _stage_table
from repcollapse.analyze.tables.read import KEY, LayerConvention, checkpoint_table, read_tables
from repcollapse.store_schema import open_store as _open_store

__all__ = ["open_store", "load_tables", "stage_table", "run_metrics"]


def open_store(path: str | Path, *, include_incomplete: bool = False) -> xr.Dataset:
    """The store as a lazy xarray Dataset with labelled coordinates.

    ``checkpoint`` is indexed by name (``ds.sel(checkpoint="base")``); ``layer`` counts from 0
    (the embeddings) to L; ``token`` is the token's row in the probe, with ``example``,
    ``domain``, ``span`` and ``position`` as coordinates along it. Only complete checkpoints
    are listed unless ``include_incomplete``.
    """
    ds = _open_store(path, include_incomplete=include_incomplete)
    coords: dict[str, Any] = {}
    for dim in ("layer", "token"):
        if dim in ds.dims and dim not in ds.coords:
            coords[dim] = np.arange(ds.sizes[dim])
    return ds.assign_coords(coords)


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
    if wide:
        conv = LayerConvention(layer=layer, domain=domain, span=span, option_set=option_set or "")
        return checkpoint_table(tables, names, conv)
    long = tables.metrics[tables.metrics["metric"].isin(names)]
    ck = tables.checkpoints
    ck = ck.drop(columns=[c for c in ck.columns if c in long.columns and c not in KEY])
    return long.merge(ck, on=KEY, how="left").reset_index(drop=True)


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
    """
    return _run_metrics(
        store,
        out,
        metrics=list(metrics) if metrics is not None else None,
        layers=list(layers) if layers is not None else None,
        options=Options(**options),
        log=lambda _msg: None,
    )
