"""``run_metrics``: every metric of a store into the tables of docs/INTERFACES.md, cached.

The recipe: open the store lazily; plan the tokens once; ask the cache what is missing per
(checkpoint, metric, layer); run the one-pass accumulator for the (layer, checkpoint-group)
pairs that miss a moment metric, a few passes at a time (as many as the scheduler has workers,
which bounds memory and lets the cache record each batch as it finishes); compute the function
and LoRA metrics the cache lacks; derive the collapse index; write the tables.
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd

from repcollapse.analyze import registry
from repcollapse.analyze.engine import layerfree, moments, passes, uncertainty
from repcollapse.analyze.engine.cache import MetricCache, rows_frame
from repcollapse.analyze.engine.integrity import layers_to_read, verified_reader
from repcollapse.analyze.engine.progress import ConsoleBar, Progress, ProgressFn, bar_wanted
from repcollapse.analyze.engine.quiet import expected_warnings_dropped
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
from repcollapse.store_schema.reader import BlockReader, StoreReader

TOKEN_VARS = ("example", "domain", "span", "split", "is_sink", "target_id")


@dataclass
class RunSummary:
    out_dir: Path
    tables: dict[str, Path] = field(default_factory=dict)
    passes: int = 0
    blocks_read: int = 0
    computed: list[tuple[str, str, int]] = field(default_factory=list)
    """(checkpoint, metric, layer) keys computed in this run (not served by the cache)."""
    seconds: dict[str, float] = field(default_factory=dict)


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


@dataclass
class _Run:
    """What one run's steps share."""

    ds: Any
    plan: TokenPlan
    ckpts: list[str]
    layers: list[int]
    options: Options
    cache: MetricCache
    recompute: bool
    xp_name: str
    reader: BlockReader
    raw_index: dict[str, int]
    """Checkpoint name -> position in the store's checkpoint dim (complete or not)."""
    summary: RunSummary
    say: Callable[[str], None]
    twins: dict[str, str]
    """Checkpoint -> the checkpoint its data were copied from (repcollapse.analyze.engine.twins): not computed."""
    progress: Progress = field(default_factory=lambda: Progress(None))
    batch_lines: bool = True
    """One log line per batch of passes (when no bar shows the progress)."""

    def missing(self, c: str, m: Any, layer: int) -> bool:
        if c in self.twins:
            return False
        key = (m.row_name, m.version, self.options.key(m.params), layer)
        return self.recompute or key not in self.cache.done(c)


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
    run = _Run(
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
        _moment_metrics(run, wanted, parent, base, n_parallel, later=function_units + 1)
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


def _function_units(run: _Run, wanted: list[Metric]) -> int:
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


def _moment_metrics(
    run: _Run, wanted: list[Metric], parent: dict, base: dict, n_parallel: int, later: int
) -> None:
    """The one-pass accumulator for every (layer, checkpoint group) that misses a moment metric,
    ``n_parallel`` passes per dask compute; the cache records each batch as it finishes."""
    moment = [m for m in wanted if m.kind == "moment"]
    d = run.ds.sizes["feature"]
    jobs = []
    for layer in run.layers:
        todo = {c: [m for m in moment if run.missing(c, m, layer)] for c in run.ckpts}
        todo = {c: ms for c, ms in todo.items() if ms}
        if not todo:
            continue
        needs = frozenset(n for ms in todo.values() for m in ms for n in m.needs)
        groups = passes.make_groups(
            list(todo), base, parent, needs, run.plan.n_gram_blocks, d, run.options.memory_budget_mb
        )
        for g, (targets, members) in enumerate(groups):
            cfg = moments.PassConfig(
                layer=layer,
                members=tuple(members),
                targets=tuple(targets),
                base=dict(base),
                parent=dict(parent),
                needs=needs,
                precision=run.options.precision,
                xp=run.xp_name,
            )
            jobs.append((cfg, g, {t: todo[t] for t in targets}))
    token = uuid.uuid4().hex[:8]
    n_chunks = len(run.plan.chunks)
    built = []  # every graph before the first compute: the progress total is known up front
    for batch in _batches(
        jobs, n_parallel, run.options.memory_budget_mb << 20, run.plan.n_gram_blocks, d
    ):
        tasks, keys = [], []
        for cfg, g, todo in batch:
            tasks += passes.pass_tasks(
                run.reader, run.raw_index, d, run.plan, cfg, todo, run.options, token, g
            )
            keys += [(t, todo[t], cfg.layer) for t in cfg.targets]
            run.summary.passes += 1
            second = len(cfg.targets) if "centered_unit" in cfg.needs else 0
            run.summary.blocks_read += n_chunks * (len(cfg.members) + second)
        built.append((batch, tasks, keys, _n_tasks(tasks)))
    # units: every task of every pass, then ``later`` (the function and LoRA stages)
    run.progress.plan(sum(b[3] for b in built) + later)
    for batch, tasks, keys, n_tasks in built:
        t0 = time.perf_counter()
        start = run.progress.done
        with run.progress.counting_tasks(n_tasks):
            results = dask.compute(*tasks)
        run.progress.reach(start + n_tasks)
        for (t, ms, layer), rows in zip(keys, results, strict=True):
            done = [(m.name, m.version, run.options.key(m.params), layer) for m in ms]
            run.cache.add(t, rows_frame(rows), done)
            run.summary.computed += [(t, m.name, layer) for m in ms]
        if run.batch_lines:
            run.say(
                f"  layers {[cfg.layer for cfg, _, _ in batch]}: "
                f"{sum(len(c.targets) for c, _, _ in batch)} target pass(es) in "
                f"{time.perf_counter() - t0:.1f}s"
            )


def _n_tasks(tasks: list) -> int:
    """Distinct tasks of delayed objects (the derive tasks of a pass share its chain)."""
    return len(set().union(*(t.__dask_graph__().keys() for t in tasks)))


def _batches(jobs: list, n_parallel: int, budget: int, n_blocks: int, d: int) -> list[list]:
    """Passes run together: at most ``n_parallel``, and as many as fit the memory budget
    together (at least one)."""
    out: list[list] = []
    used = 0
    for job in jobs:
        cfg = job[0]
        size = passes.accumulator_bytes(n_blocks, d, len(cfg.members) + len(cfg.cross_pairs()))
        if out and len(out[-1]) < n_parallel and used + size <= budget:
            out[-1].append(job)
            used += size
        else:
            out.append([job])
            used = size
    return out
