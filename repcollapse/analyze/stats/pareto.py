"""Mitigation Pareto analysis: target score kept vs collapse index vs future score.

A mitigation succeeds only if it reduces collapse while keeping most of the target-domain gain
(paper section 5.2), so the comparison is made where the alternatives are comparable: the same
model family, sequence and step (the n-th training stage of the chain; refresh stages are not
steps, so a chain with a refresh is compared at the same training stage as one without).
Values are means over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from repcollapse.store_schema.lineage import CONTROL_SEQUENCE, noop_mask

OBJECTIVES: tuple[tuple[str, bool], ...] = (
    ("target_score", True),
    ("collapse_index", False),
    ("future_score", True),
)
"""(column, higher is better)."""
GROUP: tuple[str, ...] = ("model_family", "sequence", "step")
PARETO_COLUMNS: list[str] = [
    "model_family",
    "sequence",
    "step",
    "mitigation",
    "n_seeds",
    "target_score",
    "target_kept",
    "collapse_index",
    "future_score",
    "on_frontier",
    "final_step",
]


def pareto_mask(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """True for the non-dominated rows of ``values`` (n, k).

    A row dominates another when it is at least as good in every objective and strictly better
    in one; equal rows do not dominate each other. Rows with a NaN are never on the frontier.
    Sort-and-sweep: after sorting by the first objective (best first) a row can only be
    dominated by a row before it, and only a frontier row need be checked (any row dominated by
    a non-frontier row is also dominated by the frontier row that dominates that one).
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 2 or v.shape[1] != len(maximize):
        raise ValueError(
            f"pareto_mask: expected values of shape (n, {len(maximize)}), found {v.shape}"
        )
    v = np.where(np.asarray(maximize, dtype=bool), v, -v)  # everything to maximise
    ok = ~np.isnan(v).any(axis=1)
    mask = np.zeros(len(v), dtype=bool)
    idx = np.flatnonzero(ok)
    order = idx[np.lexsort(tuple(-v[idx, j] for j in reversed(range(v.shape[1]))))]
    front: list[int] = []
    for i in order:
        f = v[front]
        if front and np.any(np.all(f >= v[i], axis=1) & np.any(f > v[i], axis=1)):
            continue
        front.append(int(i))
    mask[front] = True
    return mask


def _steps(ck: pd.DataFrame) -> pd.Series:
    """The training-stage number of each checkpoint within its chain (refresh stages skipped)."""
    train = ck["stage_kind"] != "refresh"
    chain = ["store_id", "sequence", "mitigation", "seed"]
    step = ck[train].groupby(chain)["stage_index"].rank(method="dense").astype(int)
    return step.reindex(ck.index)


def pareto_table(ck: pd.DataFrame, notes: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """One row per (family, sequence, step, mitigation) with ``on_frontier`` within its group."""
    notes = notes if notes is not None else {}
    sec = notes.setdefault("pareto", [])
    objectives = [(c, hi) for c, hi in OBJECTIVES if c in ck and ck[c].notna().any()]
    missing = [c for c, _ in OBJECTIVES if c not in dict(objectives)]
    if missing:
        sec.append(f"Not in the tables, left out of the frontier: {', '.join(missing)}.")
    real = (ck["sequence"] != CONTROL_SEQUENCE) & ~noop_mask(ck["mitigation"])
    stages = ck[(ck["stage_index"] > 0) & real]
    stages = stages.assign(step=_steps(stages)).dropna(subset=["step"])
    if stages.empty or not objectives:
        sec.append("No stage checkpoints with the objectives: no Pareto analysis.")
        return pd.DataFrame(columns=PARETO_COLUMNS)
    cols = [c for c, _ in objectives]
    agg = stages.groupby([*GROUP, "mitigation"], as_index=False).agg(
        n_seeds=("seed", "nunique"), **{c: (c, "mean") for c in cols}
    )
    for c, _ in OBJECTIVES:
        if c not in agg:
            agg[c] = np.nan
    agg["on_frontier"] = False
    for _, g in agg.groupby(list(GROUP)):
        agg.loc[g.index, "on_frontier"] = pareto_mask(
            g[cols].to_numpy(), [hi for _, hi in objectives]
        )
    none = agg[agg["mitigation"] == "none"].set_index(list(GROUP))["target_score"]
    ref = pd.MultiIndex.from_frame(agg[list(GROUP)]).map(lambda k: none.get(k, np.nan))
    agg["target_kept"] = agg["target_score"] / np.asarray(ref, dtype=float)
    agg["final_step"] = agg["step"] == agg.groupby(["model_family", "sequence"])["step"].transform(
        "max"
    )
    if agg["mitigation"].nunique() < 2:
        sec.append("Only one mitigation in the tables: the frontier compares nothing.")
    sec.append(
        "target_kept = target score / the unmitigated ('none') chain's target score at the "
        "same family, sequence and step; the frontier is computed within each such group "
        "(target score and future score higher, collapse index lower is better)."
    )
    return agg[PARETO_COLUMNS].sort_values([*GROUP, "mitigation"]).reset_index(drop=True)
