"""``run_metrics``: every metric of a store into the tables of docs/INTERFACES.md, cached.

The recipe: open the store lazily; plan the tokens once; ask the cache what is missing per
(checkpoint, metric, layer); run the one-pass accumulator for the (layer, checkpoint-group)
pairs that miss a moment metric, a few passes at a time (as many as the scheduler has workers,
which bounds memory and lets the cache record each batch as it finishes: engine.moment_stage);
compute the function and LoRA metrics the cache lacks; derive the collapse index; write the
tables.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd

from repcollapse.analyze import registry
from repcollapse.analyze.engine import layerfree, uncertainty
from repcollapse.analyze.engine.cache import MetricCache
from repcollapse.analyze.engine.integrity import layers_to_read, verified_reader
from repcollapse.analyze.engine.moment_stage import moment_metrics
from repcollapse.analyze.engine.progress import ConsoleBar, Progress, ProgressFn, bar_wanted
from repcollapse.analyze.engine.quiet import expected_warnings_dropped
from repcollapse.analyze.engine.run_state import RunState, RunSummary
from repcollapse.analyze.engine.scheduler import check_address, scheduler
from repcollapse.analyze.engine.table_rows import (
    option_columns,
    option_set_key,
    valid_rows,
    with_derived,
)
from repcollapse.analyze.engine.tokens import TokenPlan, build_plan
from repcollapse.analyze.engine.twins import alias_twins, twin_sources
from repcollapse.analyze.engine.xp import backend
from repcollapse.analyze.metrics.spectrum import topk_metric as spectrum_topk
from repcollapse.analyze.options import Options
from repcollapse.analyze.plugins import load_plugins
from repcollapse.analyze.registry import Metric
from repcollapse.analyze.tables.write import checkpoints_frame, metrics_frame, write_tables
from repcollapse.store_schema.naming import stored_names
from repcollapse.store_schema.reader import StoreReader

TOKEN_VARS = ("example", "domain", "span", "split", "is_sink", "target_id")


def store_plan(ds: Any, options: Options) -> TokenPlan:
    """The token plan of an opened store: its token coords, chunked as its hidden array is."""
    return build_plan(
        {k: np.asarray(ds[k].values) for k in TOKEN_VARS},
        int(ds["hidden"].data.chunks[2][0]),
        include_sinks=options.include_sinks,
        sample_per_domain=options.sample_per_domain,
        seed=options.seed,
        n_groups=options.uncertainty_groups if options.uncertainty else 1,
    )


def lineage(
    info: pd.DataFrame,
) -> tuple[dict[str, str | None], dict[str, str | None], dict[str, list[str]]]:
    """parent, base (root of the parent chain, if it is a stage-0 checkpoint) and ancestors."""
    names = set(info["checkpoint"])
    parent_of = dict(zip(info["checkpoint"], info["parent"], strict=True))
    stage = dict(zip(info["checkpoint"], info["stage_index"], strict=True))
    parent = {c: (p if p in names and p != c else None) for c, p in parent_of.items()}
    base, anc = {}, {}
    for c in info["checkpoint"]:
        chain, cur = [], c
        while parent[cur] is not None and parent[cur] not in chain and parent[cur] != c:
            cur = parent[cur]
            chain.append(cur)
        anc[c] = chain
        base[c] = cur if stage[cur] == 0 else None
    return parent, base, anc


def run_metrics(
    store: str | Path,
    out_dir: str | Path,
    *,
    metrics: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    checkpoints: Sequence[str] | None = None,
    options: Options | None = None,
    scheduler_address: str | None = None,
    group: str | None = None,
    recompute: bool = False,
    plugins: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
    progress: ProgressFn | bool | None = None,
) -> RunSummary:
    """Compute the requested metrics (default: all) of a store and write the tables to out_dir.

    metrics.parquet holds every cached value valid for the current registry versions and
    options for the selected checkpoints and layers, so re-running one metric keeps the table
    complete; ``recompute`` ignores the cache for the requested metrics. ``plugins``: metric
    modules to import first (``repcollapse.analyze.plugins``; ``$REPCOLLAPSE_METRIC_PLUGINS`` too).
    ``scheduler_address``: ``repcollapse.analyze.engine.scheduler`` (checked first: a bad one
    raises SchedulerUnavailable, a ValueError, within seconds). ``progress``: a function called
    as ``fn(done, total)`` over the run's units of work (``repcollapse.analyze.engine.progress``),
    True for a bar on stderr, False for neither a bar nor one log line per batch of passes, None
    (default) for the bar when stderr is a terminal and the batch lines otherwise.
    """
    say = log or (lambda msg: print(msg, file=sys.stderr))
    check_address(scheduler_address)
    bar = ConsoleBar() if progress is True or (progress is None and bar_wanted(None)) else None
    try:
        with expected_warnings_dropped():
            return _run_metrics(
                store,
                out_dir,
                metrics,
                layers,
                checkpoints,
                options,
                scheduler_address,
                group,
                recompute,
                plugins,
                say,
                Progress(bar or (progress if callable(progress) else None)),
                batch_lines=progress is None and bar is None or callable(progress),
            )
    finally:
        if bar is not None:
            bar.close()


def _run_metrics(
    store: str | Path,
    out_dir: str | Path,
    metrics: Sequence[str] | None,
    layers: Sequence[int] | None,
    checkpoints: Sequence[str] | None,
    options: Options | None,
    scheduler_address: str | None,
    group: str | None,
    recompute: bool,
    plugins: Sequence[str],
    say: Callable[[str], None],
    progress: Progress,
    batch_lines: bool,
) -> RunSummary:
    options = options or Options()
    t_start = time.perf_counter()
    summary = RunSummary(out_dir=Path(out_dir))
    load_plugins(plugins)
    for k in options.topk:
        spectrum_topk(k)
    wanted = registry.resolve(metrics)
    source = StoreReader(store, group)
    attrs = source.attrs
    ds = source.dataset()
    info = checkpoints_frame(ds, attrs)
    all_names = list(info["checkpoint"])
    # a name may be given in its current form where the store holds a legacy one (A@s0/01-math)
    ckpts = all_names if checkpoints is None else stored_names(checkpoints, all_names)
    bad = [c for c in ckpts if c not in all_names]
    if bad:
        raise ValueError(
            f"checkpoints {bad} are not complete checkpoints of {store}; available: {all_names}"
        )
    n_layers = ds.sizes["layer"]
    layer_list = list(range(n_layers)) if layers is None else [_layer(x, n_layers) for x in layers]
    parent, base, ancestors = lineage(info)
    plan = store_plan(ds, options)
    run = RunState(
        ds=ds,
        plan=plan,
        ckpts=ckpts,
        layers=layer_list,
        options=options,
        cache=MetricCache(out_dir, str(attrs["store_id"])),
        recompute=recompute,
        xp_name=backend(options.backend).__name__.split(".")[0],
        reader=source.hidden_blocks(),
        raw_index=source.slots(),
        summary=summary,
        say=say,
        twins=twin_sources(attrs.get("extraction_log", []), parent, base, ckpts),
        progress=progress,
        batch_lines=batch_lines,
    )
    to_read = layers_to_read(
        ckpts,
        layer_list,
        n_layers,
        wanted,
        run.missing,
        {"cross_base": base, "cross_parent": parent},
    )
    run.reader = verified_reader(source, list(to_read), run.raw_index, say)
    sinks = "included" if options.include_sinks else "excluded"
    say(
        f"analyze {store}: {len(ckpts)} checkpoint(s), layers {layer_list}, {plan.n_tokens} tokens "
        f"({int(plan.cell_count.sum())} kept, sinks {sinks}), {len(wanted)} metric(s), "
        f"backend {run.xp_name}"
    )
    with scheduler(scheduler_address) as n_parallel, _array_backend(run.xp_name):
        t0 = time.perf_counter()
        function_units = _function_units(run, wanted)
        moment_metrics(run, wanted, parent, base, n_parallel, later=function_units + 1)
        summary.seconds["moments"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        start = progress.done
        with progress.counting_tasks(function_units - 1):
            layerfree.function_metrics(
                ds,
                plan,
                ckpts,
                wanted,
                options,
                run.cache,
                run.missing,
                summary.computed,
                run.reader,
                run.raw_index,
            )
        progress.reach(start + function_units)
        summary.seconds["function"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    overlap, spectrum = layerfree.lora_metrics(
        ds, attrs, ckpts, wanted, options, ancestors, run.cache, run.missing, summary.computed
    )
    progress.advance()
    summary.seconds["lora"] = time.perf_counter() - t0
    alias_twins(run.cache, run.twins)

    rows = with_derived(valid_rows(run.cache, ckpts, set(layer_list), options), options)
    option_set = option_set_key(options, layer_list, n_layers, ckpts, all_names)
    table = metrics_frame(
        option_columns(rows.drop(columns=["options_key"]), options, layer_list, option_set),
        str(attrs["store_id"]),
        str(attrs.get("model_family", "")),
        not options.include_sinks,
    )
    provenance = {
        **dict(attrs),
        "analysis": {
            "options": options.as_dict(),
            "metric_versions": {m.name: m.version for m in registry.REGISTRY},
            "checkpoints": ckpts,
            "layers": layer_list,
            "group": group,
            "backend": run.xp_name,
            "scheduler": scheduler_address or "threads",
            "reference_shift": "per (checkpoint, layer, domain): mean of the domain's kept rows in "
            "the first chunk holding the domain; subtracted before the products (own Grams "
            "float64, cross products in the working precision)",
            "centered_anisotropy": "exact: second pass with the selection means of the first",
            "uncertainty": uncertainty.describe(options),
            "sinks_excluded": not options.include_sinks,
            "options_key": option_set,
        },
    }
    summary.tables = write_tables(out_dir, table, info, overlap, spectrum, provenance)
    summary.seconds["total"] = time.perf_counter() - t_start
    say(
        f"wrote {len(table)} metric rows of option set {option_set!r} to {out_dir} (rows of "
        f"other option sets kept) in {summary.seconds['total']:.1f}s "
        f"({summary.passes} passes; {len(summary.computed)} (checkpoint, metric, layer) results "
        "computed in this run, any others served by the cache)"
    )
    return summary


def _layer(x: int, n_layers: int) -> int:
    if not -n_layers <= int(x) < n_layers:
        raise ValueError(f"layer {x} out of range: the store has layers 0..{n_layers - 1}")
    return int(x) % n_layers


@contextlib.contextmanager
def _array_backend(xp_name: str) -> Iterator[None]:
    with dask.config.set({"array.backend": xp_name}):
        yield


def _function_units(run: RunState, wanted: list[Metric]) -> int:
    """Units of the function-metric stage: the tasks of each temperature pass that will run
    (layerfree.function_metrics: a part per token chunk and their sum, per checkpoint and T
    missing a metric; they read the last layer and multiply by the unembedding, so with
    --temperature they can outweigh the moment passes) and one for the stored T = 1 values."""
    func = [m for m in wanted if m.kind == "function"]
    runs = sum(
        any(run.missing(c, m.at_temperature(t), -1) for m in func)
        for t in run.options.temperatures
        for c in run.ckpts
    )
    return 1 + runs * (len(run.plan.chunks) + 1)
