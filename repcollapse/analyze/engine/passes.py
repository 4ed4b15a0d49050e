"""Dask graphs of the passes: one chain of tasks per (layer, group), derivation per target.

A pass is the chain ``init -> step1(chunk 0) -> ... -> finish1 [-> step2(chunk 0) -> ...] ->
results -> derive (one task per target)``. Step ``k`` reads chunk ``k`` of every member of the
group itself (``store_schema.reader.BlockReader``: one (checkpoint, layer, chunk) block of the
store's ``hidden`` per member, checked against its recorded checksum) and folds it into the
accumulator, so with any scheduler (threads, a dask.distributed cluster) each block is read
exactly once per pass, by the task that consumes it, and the accumulator is one object folded in token order: the same numbers whatever the
scheduler.

Why the read is inside the step rather than a task of its own (e.g. the blocks of the lazy
dask array that ``store_schema.open_store`` returns, which the rest of the runner uses for
coordinates, logit statistics and LoRA factors): block tasks have no dependencies, so dask
schedules them as soon as a worker is idle - ahead of the chain that will consume them - and
memory then grows with the number of token chunks (measured: +58 MB from 10,000 to 20,000
tokens). A second pass would also share their keys with the first (dask holding every block
of the layer between the passes; ``graph_manipulation.clone`` does not re-key xarray's indexed
graphs correctly). Objects with arrays travel inside ``functools.partial`` so that dask does
not traverse them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from dask import delayed

from repcollapse.analyze.engine import centered_pass, moments, uncertainty
from repcollapse.analyze.engine.tokens import ALL, TokenPlan
from repcollapse.analyze.engine.view import LayerView
from repcollapse.analyze.metrics.logits import FunctionSums, sums_from_hidden
from repcollapse.analyze.options import Options
from repcollapse.analyze.plugins import metric_failed
from repcollapse.analyze.registry import Metric
from repcollapse.store_schema.reader import BlockReader

Row = tuple[str, int, str, str, int, str, str, float, int]
"""(metric, metric_version, options_key, checkpoint, layer, domain, span, value, n_tokens)."""


def selections_for(metric: Metric, plan: TokenPlan) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if "all" in metric.scopes:
        out.append((ALL, ALL))
    if "domain" in metric.scopes:
        out += [(d, ALL) for d in plan.domains]
    if "span" in metric.scopes:
        out += [(ALL, s) for s in plan.spans]
    return out


def derive(
    res: dict[str, moments.LayerMoments], target: str, metrics: Sequence[Metric], options: Options
) -> list[Row]:
    """Every requested moment metric of one target at one layer, from its moments."""
    lm = res[target]
    view = LayerView(lm, options)
    rows: list[Row] = []
    per_sel: dict[tuple[str, str], list[Metric]] = {}
    for metric in metrics:
        for sel in selections_for(metric, lm.plan):
            per_sel.setdefault(sel, []).append(metric)
    for sel, sel_metrics in per_sel.items():  # selection by selection: one d x d set alive
        for metric in sel_metrics:
            try:
                value = metric.compute(view, sel)
            except Exception as exc:  # a plugin's bug: name it, where, and stop the run
                raise metric_failed(metric, target, lm.layer, sel, exc) from exc
            if value is None or not math.isfinite(value):
                continue
            rows_used = "rows" in metric.needs and lm.rows is not None
            n = len(lm.rows) if rows_used else view.stats(sel).n
            key = options.key(metric.params)
            rows.append(
                (
                    metric.name,
                    metric.version,
                    key,
                    target,
                    lm.layer,
                    sel[0],
                    sel[1],
                    float(value),
                    int(n),
                )
            )
        view.release(sel)
    if lm.plan.n_groups > 1:  # --uncertainty: (se, ci_low, ci_high, n_groups) appended
        return uncertainty.with_intervals(
            lm,
            rows,
            metrics,
            options,
            lambda m, sel, exc: metric_failed(m, target, lm.layer, sel, exc),
        )
    return rows


def accumulator_bytes(n_blocks: int, d: int, n_matrices: int) -> int:
    """float64 bytes of ``n_matrices`` sets of ``n_blocks`` d x d Grams (own or cross)."""
    return n_blocks * d * d * 8 * n_matrices


def make_groups(
    targets: Sequence[str],
    base: dict[str, str | None],
    parent: dict[str, str | None],
    needs: frozenset[str],
    n_blocks: int,
    d: int,
    budget_mb: int,
) -> list[tuple[list[str], list[str]]]:
    """Split targets into (targets, members) groups whose accumulators fit the budget. Members are
    targets plus their references; a reference shared by several targets is read once per group."""
    budget = budget_mb << 20

    def refs(t: str) -> list[str]:
        out = []
        if "cross_base" in needs and base.get(t) not in (None, t):
            out.append(base[t])
        if "cross_parent" in needs and parent.get(t) is not None:
            out.append(parent[t])
        return list(dict.fromkeys(out))

    def cost(ts: list[str], ms: list[str]) -> int:
        return accumulator_bytes(n_blocks, d, len(ms) + sum(len(refs(t)) for t in ts))

    groups: list[tuple[list[str], list[str]]] = []
    cur_t: list[str] = []
    cur_m: list[str] = []
    for t in targets:
        cand_m = list(dict.fromkeys([*cur_m, t, *refs(t)]))
        if cur_t and cost([*cur_t, t], cand_m) > budget:
            groups.append((cur_t, cur_m))
            cur_t, cand_m = [], list(dict.fromkeys([t, *refs(t)]))
        cur_t.append(t)
        cur_m = cand_m
    if cur_t:
        groups.append((cur_t, cur_m))
    return groups


def _read_step(
    step: Any, acc: moments.Accumulator, k: int, reader: BlockReader, raw: tuple[int, ...]
) -> Any:
    chunk = acc.plan.chunks[k]
    blocks = [reader.read(i, acc.config.layer, chunk.t0, chunk.t1) for i in raw]
    return step(acc, k, *blocks)


def moments_task(
    reader: BlockReader,
    raw_index: dict[str, int],
    d: int,
    plan: TokenPlan,
    config: moments.PassConfig,
    name: str,
) -> Any:
    """The delayed host moments (``moments.results``) of one (layer, group) pass: the chain
    ``init -> step1 per chunk -> finish1 [-> step2 per chunk] -> results``. ``raw_index``: each
    checkpoint's position in the store's checkpoint dimension (complete or not); ``name``
    makes its task keys unique."""
    acc = delayed(functools.partial(moments.init, config, plan, d), pure=False)(
        dask_key_name=f"init-{name}"
    )
    raw = tuple(raw_index[m] for m in config.members)
    fn = functools.partial(_read_step, moments.step1, reader=reader, raw=raw)
    for k in range(len(plan.chunks)):
        acc = delayed(fn, pure=False)(acc, k, dask_key_name=f"pass1-{name}-{k}")
    acc = delayed(centered_pass.finish1, pure=False)(acc, dask_key_name=f"finish1-{name}")
    if "centered_unit" in config.needs:
        raw = tuple(raw_index[t] for t in config.targets)
        fn = functools.partial(_read_step, centered_pass.step2, reader=reader, raw=raw)
        for k in range(len(plan.chunks)):
            acc = delayed(fn, pure=False)(acc, k, dask_key_name=f"pass2-{name}-{k}")
    return delayed(moments.results, pure=False)(acc, dask_key_name=f"results-{name}")


def pass_tasks(
    reader: BlockReader,
    raw_index: dict[str, int],
    d: int,
    plan: TokenPlan,
    config: moments.PassConfig,
    wanted: dict[str, list[Metric]],
    options: Options,
    token: str,
    group: int,
) -> list[Any]:
    """Delayed row lists, one per target, for one (layer, group) pass (``moments_task``, then
    ``derive`` per target)."""
    name = f"{token}-L{config.layer}-g{group}"
    res = moments_task(reader, raw_index, d, plan, config, name)
    return [
        delayed(
            functools.partial(derive, target=t, metrics=wanted[t], options=options), pure=False
        )(res, dask_key_name=f"derive-{name}-{i}")
        for i, t in enumerate(config.targets)
    ]


def _sum_sums(*parts: FunctionSums) -> FunctionSums:
    total = FunctionSums.zeros(len(parts[0].n))
    for p in parts:
        total += p
    return total


def _temperature_part(
    unembedding: np.ndarray,
    *,
    reader: BlockReader,
    ckpt: int,
    layer: int,
    t0: int,
    t1: int,
    **kw: Any,
) -> FunctionSums:
    return sums_from_hidden(reader.read(ckpt, layer, t0, t1), t0, unembedding=unembedding, **kw)


def temperature_task(
    reader: BlockReader,
    raw_ckpt: int,
    last_layer: int,
    unembedding: Any,
    plan: TokenPlan,
    temperature: float,
    target_id: np.ndarray,
    dtype: type,
    token: str,
) -> Any:
    """Delayed FunctionSums at temperature T for one checkpoint (a task per token chunk, each
    reading its block of the last hidden layer)."""
    parts = []
    for k, chunk in enumerate(plan.chunks):
        fn = functools.partial(
            _temperature_part,
            reader=reader,
            ckpt=raw_ckpt,
            layer=last_layer,
            t0=chunk.t0,
            t1=chunk.t1,
            plan=plan,
            temperature=temperature,
            target_id=target_id,
            dtype=dtype,
        )
        parts.append(delayed(fn, pure=False)(unembedding, dask_key_name=f"temp-{token}-{k}"))
    return delayed(_sum_sums, pure=False)(*parts, dask_key_name=f"tempsum-{token}")
