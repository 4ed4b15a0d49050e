"""Layer-free metrics for the runner: function metrics (stored T = 1 statistics, and any
temperature from the last hidden layer) and LoRA metrics and tables, each served from the cache
when it already holds them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import dask
import numpy as np
import pandas as pd

from repcollapse.analyze.engine import moments, passes
from repcollapse.analyze.engine.cache import MetricCache, rows_frame
from repcollapse.analyze.engine.tokens import ALL, TokenPlan
from repcollapse.analyze.metrics import lora
from repcollapse.analyze.metrics.logits import FunctionSums, sums_from_stats
from repcollapse.analyze.options import Options
from repcollapse.analyze.plugins import metric_failed
from repcollapse.analyze.registry import Metric
from repcollapse.analyze.tables.write import OVERLAP_COLUMNS, SPECTRUM_COLUMNS
from repcollapse.store_schema import schema as S


def function_metrics(
    ds: Any,
    plan: TokenPlan,
    ckpts: list[str],
    wanted: list[Metric],
    options: Options,
    cache: MetricCache,
    missing: Callable,
    computed: list,
    reader: passes.BlockReader,
    raw_index: dict[str, int],
) -> None:
    func = [m for m in wanted if m.kind == "function"]
    if not func:
        return
    target_id = np.asarray(ds["target_id"].values)
    jobs = []  # (checkpoint, entries at one temperature, delayed or ready FunctionSums)
    for c in ckpts:
        todo = [m for m in func if missing(c, m, -1)]
        if todo:
            stats = {v: np.asarray(ds[v].sel(checkpoint=c).values) for v in S.LOGIT_STATS}
            jobs.append((c, todo, sums_from_stats(plan, stats, target_id)))
    if options.temperatures:
        last = ds.sizes["layer"] - 1
        heads = np.asarray(ds["head"].values)
        W = {h: dask.delayed(np.asarray)(ds["unembedding"].data[h]) for h in set(heads.tolist())}
        dtype = moments.PRECISIONS[options.precision]
        for T in options.temperatures:
            at_t = [m.at_temperature(T) for m in func]
            for i, c in enumerate(ds["name"].values):
                c = str(c)
                todo = [m for m in at_t if c in ckpts and missing(c, m, -1)]
                if todo:
                    task = passes.temperature_task(
                        reader,
                        raw_index[c],
                        last,
                        W[int(heads[i])],
                        plan,
                        T,
                        target_id,
                        dtype,
                        f"{uuid.uuid4().hex[:8]}-{i}",
                    )
                    jobs.append((c, todo, task))
    ready = dask.compute(*[j[2] for j in jobs])
    for (c, todo, _), sums in zip(jobs, ready, strict=True):
        rows, done = _function_rows(c, todo, sums, plan, options)
        cache.add(c, rows_frame(rows), done)
        computed += [(c, m.row_name, -1) for m in todo]


def _function_rows(
    c: str, todo: list[Metric], sums: FunctionSums, plan: TokenPlan, options: Options
) -> tuple[list[tuple], list[tuple]]:
    """Rows of function metrics (all at one temperature: ``sums`` were computed at it)."""
    rows, done = [], []
    for m in todo:
        key = options.key(m.params)
        for sel in plan.selections():
            s = sums.select(plan.cells_of(sel))
            try:
                value = m.compute(s)
            except Exception as exc:  # a plugin's bug: name it, where, and stop the run
                raise metric_failed(m, c, -1, sel, exc, m.row_name) from exc
            if value is not None and np.isfinite(value):
                rows.append(
                    (m.row_name, m.version, key, c, -1, sel[0], sel[1], float(value), int(s.n))
                )
        done.append((m.row_name, m.version, key, -1))
    return rows, done


LORA_TABLES_VERSION = 1
"""Part of the cache key of lora_overlap / lora_spectrum: bump when their definition changes."""


def lora_metrics(
    ds: Any,
    attrs: dict,
    ckpts: list[str],
    wanted: list[Metric],
    options: Options,
    ancestors: dict,
    cache: MetricCache,
    missing: Callable,
    computed: list,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """LoRA tables for every checkpoint (r x r SVDs, but every factor of the store is read) and
    the cached LoRA metric rows. The tables are cached with the store's checkpoint list and
    lora_k: a re-run that needs no LoRA metric reads them back instead of recomputing them."""
    sid, fam = str(attrs["store_id"]), str(attrs.get("model_family", ""))
    names = [str(n) for n in ds["name"].values]
    table_key = {"checkpoints": names, "lora_k": options.lora_k, "version": LORA_TABLES_VERSION}
    lora_wanted = [m for m in wanted if m.kind == "lora"]
    if not any(missing(c, m, -1) for m in lora_wanted for c in ckpts):
        overlap, spectrum = (
            cache.table("lora_overlap", table_key),
            cache.table("lora_spectrum", table_key),
        )
        if overlap is not None and spectrum is not None:
            return overlap, spectrum
    ups = {c: lora.checkpoint_updates(ds, c) for c in names} if lora.lora_modules(ds) else {}
    spec_rows, ov_rows = [], []
    for c, mods in ups.items():
        for module, blocks in mods.items():
            for b, u in enumerate(blocks):
                spec_rows += [(sid, fam, c, module, b, i, float(s)) for i, s in enumerate(u.sigma)]
    with_update = [c for c in names if ups.get(c)]
    for a in with_update:
        for b in with_update:
            for module, (k, value, base) in lora.pair_overlap(
                ups[a], ups[b], options.lora_k
            ).items():
                ov_rows.append((sid, fam, a, b, module, k, value, base))
    for m in lora_wanted:
        key = options.key(m.params)
        for c in ckpts:
            if not missing(c, m, -1):
                continue
            inputs = lora.LoraInputs(c, ups, tuple(ancestors[c]), options.lora_k)
            try:
                vals = _lora_values(m.compute(inputs))
            except Exception as exc:  # a plugin's bug: name it, where, and stop the run
                raise metric_failed(m, c, -1, (ALL, ALL), exc) from exc
            rows = [(m.name, m.version, key, c, layer, ALL, ALL, v, 0) for layer, v in vals]
            done = {(m.name, m.version, key, layer) for layer, _ in vals} | {
                (m.name, m.version, key, -1)
            }
            cache.add(c, rows_frame(rows), done)
            computed.append((c, m.name, -1))
    # the tables' own column lists (tables.write), so a column added there is added here
    spectrum = pd.DataFrame(spec_rows, columns=list(SPECTRUM_COLUMNS))
    overlap = pd.DataFrame(ov_rows, columns=list(OVERLAP_COLUMNS))
    cache.save_table("lora_overlap", table_key, overlap)
    cache.save_table("lora_spectrum", table_key, spectrum)
    return overlap, spectrum


def _lora_values(out: Any) -> list[tuple[int, float]]:
    """A lora compute's result as (layer, value) rows: a number is the layer-free value (layer
    -1), a mapping one value per layer; None and non-finite values give no row."""
    if out is None:
        return []
    items = out.items() if isinstance(out, Mapping) else [(-1, out)]
    vals = [(int(layer), float(v)) for layer, v in items if v is not None]
    return [(layer, v) for layer, v in vals if np.isfinite(v)]
