"""Per-unit values of the claims: one (family, seed) value per replicate unit, with its item
variance (from the behaviour SEs, or the probe-example SEs of metrics.parquet: ``item_se``).

docs/claims.md defines the unit (a model family and seed), which checkpoints each claim compares,
and when a family is left out of a claim because its score sits at a bound everywhere. The
claims themselves (effects, intervals, verdicts) are in ``claims``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from repcollapse.analyze.tables.read import LayerConvention, Tables, checkpoint_table

Notes = dict[str, list[str]]


def units(rows: pd.DataFrame, col: str) -> pd.DataFrame:
    """(model_family, seed, value, ivar) of ``col``; ivar from ``<col>_se`` when present."""
    se = rows[f"{col}_se"] if f"{col}_se" in rows else pd.Series(np.nan, index=rows.index)
    return pd.DataFrame(
        {
            "model_family": rows["model_family"].to_numpy(),
            "seed": rows["seed"].to_numpy(),
            "value": rows[col].to_numpy(dtype=float),
            "ivar": (se.to_numpy(dtype=float)) ** 2,
        }
    )


def chain(ck: pd.DataFrame, seq: str, mitigation: str = "none") -> pd.DataFrame:
    return ck[(ck["sequence"] == seq) & (ck["mitigation"] == mitigation) & (ck["stage_index"] > 0)]


def at(rows: pd.DataFrame, col: str, stage: int | str) -> pd.DataFrame:
    """The value of ``col`` at one stage of each (family, seed) chain: an index, or 'last'."""
    if stage == "last":
        # The chain's last stage in its family: a seed whose chain stops short has no value
        # there (comparing it at an earlier stage would mix stage counts).
        idx = rows.groupby("model_family")["stage_index"].transform("max")
        rows = rows[rows["stage_index"] == idx]
    else:
        rows = rows[rows["stage_index"] == stage]
    return units(rows, col)


def base(ck: pd.DataFrame, col: str) -> pd.DataFrame:
    b = units(ck[ck["stage_index"] == 0], col)
    return b.groupby("model_family", as_index=False)[["value", "ivar"]].mean()


def diff(a: pd.DataFrame, b: pd.DataFrame, notes: Notes, claim: str) -> pd.DataFrame:
    """a - b per unit; b keyed by family alone (a base) or by (family, seed) (paired)."""
    key = ["model_family", "seed"] if "seed" in b else ["model_family"]
    m = a.merge(b, on=key, how="outer" if len(key) == 2 else "left", suffixes=("", "_b"))
    unpaired = m["value"].isna() ^ m["value_b"].isna()
    if unpaired.any():
        note(notes, f"{claim}: {int(unpaired.sum())} seed(s) on one side only, left out.")
    m = m[~(m["value"].isna() | m["value_b"].isna())]
    return m.assign(value=m["value"] - m["value_b"], ivar=m["ivar"] + m["ivar_b"])[
        ["model_family", "seed", "value", "ivar"]
    ]


def note(notes: Notes, text: str) -> None:
    if text not in notes.setdefault("claims", []):
        notes["claims"].append(text)


def at_bound(ck: pd.DataFrame, col: str) -> dict[str, float]:
    """The families whose score ``col`` (an accuracy in [0, 1]) is 0 at every checkpoint, or 1
    at every checkpoint, with that value.

    Such a family's seeds agree exactly and its binomial item SE is 0 by construction, not by
    precision: the measurement cannot move, so it says nothing about a change. docs/claims.md
    (revision of 2026-12-06) leaves it out of the claims on that score.
    """
    if col not in ck or ck.empty:
        return {}
    out = {}
    for fam, v in ck.groupby("model_family")[col]:
        v = v.dropna()
        if len(v) and v.min() == v.max() and float(v.iloc[0]) in (0.0, 1.0):
            out[str(fam)] = float(v.iloc[0])
    return out


def without_bound(
    ck: pd.DataFrame, cols: tuple[str, ...], notes: Notes
) -> tuple[pd.DataFrame, str]:
    """``ck`` less the families at a bound on any of ``cols``, and the detail that says so."""
    left: dict[str, list[str]] = {}
    for col in cols:
        for fam, value in at_bound(ck, col).items():
            left.setdefault(fam, []).append(f"{col} {value:g}")
    if not left:
        return ck, ""
    parts = [f"{fam} ({', '.join(why)} at every checkpoint)" for fam, why in sorted(left.items())]
    detail = "left out at its floor or ceiling: " + "; ".join(parts)
    for p in parts:
        note(notes, f"Left out of the claims on {', '.join(cols)} at its floor or ceiling: {p}.")
    return ck[~ck["model_family"].astype(str).isin(left)], detail


def item_se(tables: Tables, names: list[str], conv: LayerConvention) -> pd.DataFrame:
    """``<metric>_se`` per checkpoint from metrics.parquet's ``se`` (the interval over probe
    examples), under the same layer convention as the values; empty when none is recorded.

    Under the mean over layers it is the mean of the layers' SEs, an upper bound of the SE of
    the layer mean (sd(sum X_l / L) <= sum sd(X_l) / L): the MDE floor it gives is conservative.
    """
    m = tables.metrics
    if m is None or "se" not in m or not np.isfinite(m["se"]).any():
        return pd.DataFrame(columns=["store_id", "checkpoint"])
    se_tables = dataclasses.replace(tables, metrics=m.assign(value=m["se"]))
    se = checkpoint_table(se_tables, names, conv)[["store_id", "checkpoint", *names]]
    return se.rename(columns={n: f"{n}_se" for n in names})
