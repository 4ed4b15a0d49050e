"""The moment stage of ``run_metrics``: the one-pass accumulator (``engine.moments``) for every
(layer, checkpoint group) that misses a moment metric, as dask graphs of passes run a batch at a
time (as many passes as the scheduler has workers and the memory budget holds), the cache
recording each batch as it finishes.
"""

from __future__ import annotations

import time
import uuid

import dask

from repcollapse.analyze.engine import moments, passes
from repcollapse.analyze.engine.cache import rows_frame
from repcollapse.analyze.engine.run_state import RunState
from repcollapse.analyze.registry import Metric


def moment_metrics(
    run: RunState, wanted: list[Metric], parent: dict, base: dict, n_parallel: int, later: int
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
