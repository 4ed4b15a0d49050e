"""The paper's stage table (Table 4; per family and sequence as in its appendix) with intervals
over seeds: one row per (family, sequence, mitigation, stage), each quantity a mean over seeds
with a t interval (none with one seed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.stats

from repcollapse.analyze.stats.design import family_key
from repcollapse.store_schema.lineage import noop_mask

QUANTITIES: dict[str, str] = {
    "target_score": "Target",
    "erank_norm": "Eff. rank",
    "aniso_centered": "Anis.",
    "cka_base": "CKA",
    "entropy": "Logit ent.",
    "lora_overlap_prev": "LoRA ov.",
    "future_score": "Future",
}
"""Column -> the paper's column header, in the paper's order."""
KEY: list[str] = ["model_family", "sequence", "mitigation", "stage_index", "stage"]


def t_interval(x: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """(mean, low, high) of the t interval over the finite values of ``x``; NaN bounds for n < 2."""
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return (np.nan, np.nan, np.nan)
    m = float(x.mean())
    if len(x) < 2:
        return (m, np.nan, np.nan)
    half = (
        float(scipy.stats.t.ppf(1 - alpha / 2, len(x) - 1)) * float(x.std(ddof=1)) / np.sqrt(len(x))
    )
    return (m, m - half, m + half)


def stage_table(ck: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Columns KEY, n_seeds, then per quantity ``q``, ``q_ci_low``, ``q_ci_high``.

    CKA to base is 1 - drift_base where only the drift is in the tables; the base row has CKA 1
    by definition where neither is recorded for it.
    """
    d = ck[~noop_mask(ck["mitigation"])].copy()
    d["model_family"] = family_key(d)  # one row per model, even where two share a label
    if "cka_base" not in d:
        d["cka_base"] = np.nan
    if "drift_base" in d:
        d["cka_base"] = d["cka_base"].fillna(1.0 - d["drift_base"])
    d.loc[d["stage_index"] == 0, "cka_base"] = d.loc[d["stage_index"] == 0, "cka_base"].fillna(1.0)
    d.loc[d["stage_index"] == 0, "sequence"] = ""
    for q in QUANTITIES:
        if q not in d:
            d[q] = np.nan
    rows = []
    for key, g in d.groupby(KEY, sort=True):
        row = dict(zip(KEY, key, strict=True), n_seeds=int(g["seed"].nunique()))
        for q in QUANTITIES:
            # One value per seed (a seed appearing twice, e.g. a reused stage, counts once).
            per_seed = g.groupby("seed")[q].mean().to_numpy(dtype=float)
            row[q], row[f"{q}_ci_low"], row[f"{q}_ci_high"] = t_interval(per_seed, alpha)
        rows.append(row)
    cols = [*KEY, "n_seeds", *(c for q in QUANTITIES for c in (q, f"{q}_ci_low", f"{q}_ci_high"))]
    out = pd.DataFrame(rows, columns=cols)
    # The paper's order: per family the base, then each sequence's plain chain before its
    # mitigated variants, stages in order.
    order = out.assign(_mit=out["mitigation"] != "none").sort_values(
        ["model_family", "sequence", "_mit", "mitigation", "stage_index"]
    )
    return order.drop(columns="_mit").reset_index(drop=True)


def interval_cell(m: float, lo: float, hi: float, digits: int = 3) -> str:
    """One cell of the printed stage table: 'mean [low, high]', the mean alone where there is no
    interval (one seed), '–' where there is no mean."""
    if not np.isfinite(m):
        return "–"
    if np.isfinite(lo) and np.isfinite(hi):
        return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    return f"{m:.{digits}f}"


def formatted(st: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The stage table as the paper prints it: 'mean [low, high]' per cell (no interval: mean)."""
    out = pd.DataFrame(
        {
            "Family": st["model_family"],
            "Stage": np.where(
                st["stage_index"] == 0,
                "base",
                st["sequence"]
                + np.where(st["mitigation"] == "none", "", "[" + st["mitigation"] + "]")
                + "/"
                + st["stage_index"].map("{:02d}".format)
                + "-"
                + st["stage"],
            ),
            "Seeds": st["n_seeds"],
        }
    )
    for q, head in QUANTITIES.items():
        out[head] = [
            interval_cell(m, lo, hi, digits)
            for m, lo, hi in zip(st[q], st[f"{q}_ci_low"], st[f"{q}_ci_high"], strict=True)
        ]
    return out
