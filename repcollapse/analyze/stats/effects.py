"""Stage effects against the matched-token control, and order (path) dependence.

Both compare checkpoint-level values (``repcollapse.analyze.stats.regression.checkpoint_frame``) across seeds; a
confidence interval needs two or more seeds on each side, and fewer give a plain note instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.stats

from repcollapse.analyze.stats.config import Notes, StatsConfig, add_note
from repcollapse.analyze.tables.read import with_parent


def bootstrap_ci(
    samples: Sequence[np.ndarray], statistic: Callable[..., np.ndarray], cfg: StatsConfig
) -> tuple[float, float]:
    """Percentile bootstrap CI (percentile, not BCa: BCa fails on two or three equal seeds)."""
    if min(len(s) for s in samples) < 2 or all(np.ptp(s) == 0 for s in samples):
        return (np.nan, np.nan)
    res = scipy.stats.bootstrap(
        tuple(samples),
        statistic,
        n_resamples=cfg.n_resamples,
        confidence_level=1 - cfg.alpha,
        method="percentile",
        vectorized=True,
        random_state=np.random.default_rng(cfg.seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


STAGE_COLUMNS: list[str] = [
    "model_family",
    "sequence",
    "stage_index",
    "stage_kind",
    "stage_domain",
    "stage",
    "metric",
    "n_seeds",
    "delta",
    "control_delta",
    "effect",
    "ci_low",
    "ci_high",
    "basis",
]


def stage_effects(ck: pd.DataFrame, cfg: StatsConfig, notes: Notes) -> pd.DataFrame:
    """Each stage's change vs its parent, minus the matched general-SFT control's change."""
    sec = "stage_effects"
    metrics = [m for m in (*cfg.stage_metrics, "future_score") if m in ck and ck[m].notna().any()]
    d = with_parent(ck, metrics)
    plain = (d["mitigation"] == "none") & (d["stage_index"] > 0)
    ctrl = d[plain & (d["sequence"] == cfg.control_sequence)]
    main = d[plain & (d["sequence"] != cfg.control_sequence)]
    if ctrl.empty:
        add_note(
            notes,
            sec,
            f"No '{cfg.control_sequence}' sequence: effects are raw changes vs "
            "the parent, not relative to a matched-token general-SFT control.",
        )
    rows = []
    keys = [
        "model_family",
        "store_id",
        "sequence",
        "stage_index",
        "stage_kind",
        "stage_domain",
        "stage",
    ]
    for key, g in main.groupby(keys, sort=True):
        fam, sid, seq, idx, kind, dom, stage = key
        c = ctrl[(ctrl["store_id"] == sid) & (ctrl["stage_index"] == idx)]
        for m in metrics:
            delta = g.set_index("seed")[f"delta_{m}"].dropna()
            if delta.empty:
                continue
            if c.empty:
                cdelta, basis = pd.Series(0.0, index=delta.index), "raw (no control)"
            else:
                cs = c.set_index("seed")[f"delta_{m}"]
                # Match the control's seed where it has one; its seed mean otherwise.
                cdelta = cs.reindex(delta.index).fillna(cs.mean())
                basis = "vs control"
            eff = (delta - cdelta).to_numpy()
            rows.append(
                dict(
                    model_family=fam,
                    sequence=seq,
                    stage_index=idx,
                    stage_kind=kind,
                    stage_domain=dom,
                    stage=stage,
                    metric=m,
                    n_seeds=len(eff),
                    delta=delta.mean(),
                    control_delta=cdelta.mean(),
                    effect=eff.mean(),
                    basis=basis,
                    _eff=eff,
                )
            )
    out = pd.DataFrame(rows)
    if out.empty:
        add_note(notes, sec, "No stage checkpoints with a parent in the tables: no stage effects.")
        return pd.DataFrame(columns=STAGE_COLUMNS)
    # Pooled over families and sequences: the objective-level estimate.
    pooled = []
    for (kind, dom, stage, m), g in out.groupby(["stage_kind", "stage_domain", "stage", "metric"]):
        eff = np.concatenate(g["_eff"].to_list())
        pooled.append(
            dict(
                model_family="all",
                sequence="all",
                stage_index=-1,
                stage_kind=kind,
                stage_domain=dom,
                stage=stage,
                metric=m,
                n_seeds=len(eff),
                delta=g["delta"].mean(),
                control_delta=g["control_delta"].mean(),
                effect=eff.mean(),
                basis=g["basis"].iloc[0],
                _eff=eff,
            )
        )
    out = pd.concat([out, pd.DataFrame(pooled)], ignore_index=True)
    cis = [bootstrap_ci([e], _mean, cfg) for e in out["_eff"]]
    out["ci_low"], out["ci_high"] = [c[0] for c in cis], [c[1] for c in cis]
    if (out.loc[out["model_family"] != "all", "n_seeds"] < 2).any():
        add_note(
            notes,
            sec,
            "Some stages have a single seed: no confidence interval for them "
            "(bootstrap over seeds needs two or more).",
        )
    add_note(
        notes,
        sec,
        "Rows with model_family='all' pool every family, sequence and seed of "
        "an objective; their intervals resample those units.",
    )
    return out[STAGE_COLUMNS]


ORDER_COLUMNS: list[str] = [
    "model_family",
    "metric",
    "sequences_math_code",
    "sequences_code_math",
    "stage_index",
    "n_math_code",
    "n_code_math",
    "mean_math_code",
    "mean_code_math",
    "difference",
    "ci_low",
    "ci_high",
]


def order_effects(
    ck: pd.DataFrame, cfg: StatsConfig, notes: Notes, first: str = "math", second: str = "code"
) -> pd.DataFrame:
    """Math-then-code vs code-then-math: each metric at the first checkpoint after both."""
    sec = "order_effects"
    metrics = [
        m
        for m in (*cfg.stage_metrics, "target_score", "future_score")
        if m in ck and ck[m].notna().any()
    ]
    plain = ck[
        (ck["mitigation"] == "none")
        & (ck["stage_index"] > 0)
        & (ck["sequence"] != cfg.control_sequence)
    ]
    rows = []
    for fam, g in plain.groupby("model_family"):
        groups: dict[str, list[tuple[str, int]]] = {"mc": [], "cm": []}
        for seq, s in g.groupby("sequence"):
            at = s.groupby("stage_domain")["stage_index"].min()
            if first in at and second in at:
                order = "mc" if at[first] < at[second] else "cm"
                groups[order].append((seq, int(max(at[first], at[second]))))
        if not (groups["mc"] and groups["cm"]):
            continue
        both = {
            o: pd.concat([g[(g["sequence"] == s) & (g["stage_index"] == i)] for s, i in v])
            for o, v in groups.items()
        }
        for m in metrics:
            x, y = both["mc"][m].dropna().to_numpy(), both["cm"][m].dropna().to_numpy()
            if not (len(x) and len(y)):
                continue
            lo, hi = bootstrap_ci([x, y], _mean_diff, cfg)
            rows.append(
                dict(
                    model_family=fam,
                    metric=m,
                    sequences_math_code=",".join(s for s, _ in groups["mc"]),
                    sequences_code_math=",".join(s for s, _ in groups["cm"]),
                    stage_index=",".join(sorted({str(i) for v in groups.values() for _, i in v})),
                    n_math_code=len(x),
                    n_code_math=len(y),
                    mean_math_code=x.mean(),
                    mean_code_math=y.mean(),
                    difference=x.mean() - y.mean(),
                    ci_low=lo,
                    ci_high=hi,
                )
            )
    out = pd.DataFrame(rows, columns=ORDER_COLUMNS)
    if out.empty:
        add_note(
            notes,
            sec,
            f"No pair of sequences with {first} and {second} in both orders: no order comparison.",
        )
    elif (out[["n_math_code", "n_code_math"]].min(axis=1) < 2).any():
        add_note(
            notes,
            sec,
            "One seed on a side of an order comparison: difference without a confidence interval.",
        )
    return out
