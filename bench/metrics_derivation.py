"""The fixed cost of deriving every moment metric of one (checkpoint, layer) from its moments,
and its parts (``bench_metrics``' derivation lines)."""

from __future__ import annotations

import time
from pathlib import Path


def derivation_cost(store: Path, layer: int) -> dict:
    """The fixed cost of one (checkpoint, layer): every moment metric derived from the moments a
    pass leaves (one pass over ``layer``, all checkpoints targets), timed per checkpoint with 1
    BLAS thread and averaged, and its parts, each on a fresh view: the covariance
    eigendecompositions (one per selection), RankMe's second-moment ones (one per selection),
    the two probes, the silhouette; the rest (combining cells into selections, CKA, the other
    metrics) is the total minus those. It does not depend on the number of tokens."""
    from threadpoolctl import threadpool_limits

    from repcollapse.analyze import registry
    from repcollapse.analyze.engine import moments, passes
    from repcollapse.analyze.engine.runner import lineage, store_plan
    from repcollapse.analyze.engine.tokens import ALL
    from repcollapse.analyze.engine.view import LayerView
    from repcollapse.analyze.options import Options
    from repcollapse.analyze.tables.write import checkpoints_frame
    from repcollapse.store_schema.reader import StoreReader

    source = StoreReader(store)  # as run_metrics opens a store
    ds = source.dataset()
    options, plan = Options(), store_plan(ds, Options())
    info = checkpoints_frame(ds, source.attrs)
    names = list(info["checkpoint"])
    parent, base, _ = lineage(info)
    wanted = [m for m in registry.resolve(None) if m.kind == "moment"]
    cfg = moments.PassConfig(
        layer=layer,
        members=tuple(names),
        targets=tuple(names),
        base=base,
        parent=parent,
        needs=frozenset(n for m in wanted for n in m.needs),
    )
    res = passes.moments_task(
        source.hidden_blocks(), source.slots(), ds.sizes["feature"], plan, cfg, "derivation"
    ).compute(scheduler="sync")
    sels = plan.selections()
    parts = {"total": 0.0, "eig_cov": 0.0, "eig_second": 0.0, "probes": 0.0, "silhouette": 0.0}
    with threadpool_limits(1):
        for t in names:
            t0 = time.perf_counter()
            passes.derive(res, t, wanted, options)
            parts["total"] += time.perf_counter() - t0
            view = LayerView(res[t], options)
            stats = [view.stats(sel) for sel in sels]  # combined moments: in 'rest'
            for name in ("eig_cov", "eig_second"):
                t0 = time.perf_counter()
                for st in stats:
                    getattr(st, name)
                parts[name] += time.perf_counter() - t0
            for part, metric_names in (
                ("probes", ("probe_acc", "probe_acc_shuffled")),
                ("silhouette", ("silhouette",)),
            ):
                t0 = time.perf_counter()
                for name in metric_names:
                    registry.get(name).compute(view, (ALL, ALL))
                parts[part] += time.perf_counter() - t0
    ms = {k: round(v / len(names) * 1e3, 1) for k, v in parts.items()}
    ms["rest"] = round(ms["total"] - sum(v for k, v in ms.items() if k != "total"), 1)
    return {"layer": layer, "selections": len(sels), "ms_per_checkpoint_layer": ms}
