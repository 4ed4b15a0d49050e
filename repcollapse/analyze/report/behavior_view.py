"""Behavioural numbers with their uncertainty, as the report and the demo console show them.

Every behavioural measure of behavior.json comes with a standard error and the count of items
behind it (``<key>_se``, ``<key>_n`` in checkpoints.parquet; docs/INTERFACES.md). A point
estimate alone hides how coarse these numbers are at small budgets (8 future items: a score
moves in steps of 0.125 and its SE reaches 0.18), so wherever the report or the demo prints a
behavioural number it prints 'value ± SE' and the n behind it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from repcollapse.analyze.report import template
from repcollapse.analyze.report.numbers import with_se
from repcollapse.analyze.stats.design import family_key
from repcollapse.analyze.stats.stage_table import KEY
from repcollapse.store_schema.lineage import NO_MITIGATION, noop_mask
from repcollapse.store_schema.schema import BEHAVIOR_MEASURES

MEASURES: dict[str, str] = {
    "target_score": "Target score",
    "retention": "Retention",
    "ece": "ECE",
    "val_loss": "Val. NLL",
    "target_nll": "Target NLL",
    "retention_nll": "Retention NLL",
    "future_score": "Future score",
    "future_auc": "Future AUC",
    "future_nll": "Future NLL",
    "future_nll_auc": "Future NLL AUC",
    "future_steps_to_nll": "Steps to NLL",
}
"""Every measure with an SE and n in behavior.json, with its column header."""
assert set(MEASURES) == set(BEHAVIOR_MEASURES), "behaviour measures and their headers drifted"


def present(ck: pd.DataFrame) -> list[str]:
    """The measures with at least one value in ``ck``, in MEASURES order."""
    return [m for m in MEASURES if m in ck and pd.to_numeric(ck[m], errors="coerce").notna().any()]


def numeric(ck: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric column of ``ck``; NaN throughout where the tables predate it."""
    if name not in ck:
        return np.full(len(ck), np.nan)
    return pd.to_numeric(ck[name], errors="coerce").to_numpy(dtype=float)


def common_n(ck: pd.DataFrame, measure: str) -> float:
    """The n every measured row of ``measure`` shares, or NaN where it varies (or is unknown)."""
    v, n = numeric(ck, measure), numeric(ck, f"{measure}_n")
    ns = set(n[np.isfinite(v) & np.isfinite(n)].tolist())
    unknown = bool((np.isfinite(v) & ~np.isfinite(n)).any())
    return float(ns.pop()) if len(ns) == 1 and not unknown else np.nan


def checkpoint_labels(ck: pd.DataFrame) -> pd.Series:
    """'base', or 'A/02-math', 'A[replay:general:0.10]/02-math' per checkpoint row."""
    mit = ck["mitigation"].astype(str)
    mit = mit.where(mit.isin(["", NO_MITIGATION]), "[" + mit + "]").replace(NO_MITIGATION, "")
    lab = (
        ck["sequence"].astype(str)
        + mit
        + "/"
        + ck["stage_index"].astype(int).map("{:02d}".format)
        + "-"
        + ck["stage"].astype(str)
    )
    return lab.where(ck["stage_index"].astype(int) > 0, "base")


def ordered(ck: pd.DataFrame) -> pd.DataFrame:
    """Checkpoint rows in the stage table's order: per family the base, then each sequence's
    plain chain before its mitigated variants, seeds together, stages in order."""
    d = ck.assign(
        _fam=family_key(ck),
        _seq=ck["sequence"].astype(str).where(ck["stage_index"].astype(int) > 0, ""),
        _mit=ck["mitigation"].astype(str) != NO_MITIGATION,
    )
    d = d.sort_values(["_fam", "_seq", "_mit", "mitigation", "seed", "stage_index"], kind="stable")
    return d.drop(columns=["_fam", "_seq", "_mit"]).reset_index(drop=True)


def cells(ck: pd.DataFrame, measure: str, n_in_header: bool) -> list[tuple[str, str]]:
    """Per row, ('value ± SE', '(n=N)'): the count beneath unless the header carries it."""
    v, se, n = numeric(ck, measure), numeric(ck, f"{measure}_se"), numeric(ck, f"{measure}_n")
    out = []
    for x, s, k in zip(v, se, n, strict=True):
        shown = not n_in_header and np.isfinite(x) and np.isfinite(k)
        out.append((with_se(x, s), f"(n={int(k)})" if shown else ""))
    return out


def behavior_table_html(ck: pd.DataFrame | None) -> str:
    """The report's behaviour table: one row per checkpoint, each measure as 'value ± SE' with
    its n (in the header where every checkpoint has the same n, beneath the cell otherwise)."""
    if ck is None or ck.empty:
        return '<p class="note">No checkpoints.</p>'
    measures = present(ck)
    if not measures:
        return '<p class="note">No behavioural evaluation in checkpoints.parquet.</p>'
    d = ordered(ck)
    many = family_key(d).nunique() > 1
    head = [*(["Model family"] if many else []), "Checkpoint", "Seed"]
    columns = []
    for m in measures:
        n = common_n(d, m)
        head.append(MEASURES[m] + (f" (n={int(n)})" if np.isfinite(n) else ""))
        columns.append(cells(d, m, np.isfinite(n)))
    lab = checkpoint_labels(d)
    fam = family_key(d)
    rows = [
        dict(
            labels=[*([fam.iloc[i]] if many else []), lab.iloc[i], str(int(d["seed"].iloc[i]))],
            cells=[col[i] for col in columns],
        )
        for i in range(len(d))
    ]
    table = template.render(template.STAGE_TABLE, head=head, rows=rows, n_labels=3 if many else 2)
    return f'<div class="nowrap">{table}</div>'  # 'value ± SE' on one line; the box scrolls


def stage_se(st: pd.DataFrame, ck: pd.DataFrame | None, measures: list[str]) -> pd.DataFrame:
    """Per stage-table row with one seed, each measure's SE and n from its checkpoint (the
    table's t interval needs two seeds; one seed still has the SE over items). NaN where the
    row has several seeds, or its checkpoints disagree (a seed evaluated twice)."""
    out = pd.DataFrame(index=st.index, columns=[f"{m}_{s}" for m in measures for s in ("se", "n")])
    out = out.astype(float)
    if ck is None or ck.empty:
        return out
    d = ck[~noop_mask(ck["mitigation"])].copy()
    d["model_family"] = family_key(d)
    d.loc[d["stage_index"] == 0, "sequence"] = ""
    groups = {k: g for k, g in d.groupby(KEY, sort=False)}
    for i, r in st.iterrows():
        g = groups.get(tuple(r[k] for k in KEY))
        if g is None or int(r["n_seeds"]) != 1:
            continue
        for m in measures:
            seen = {
                (a, b, c)
                for a, b, c in zip(
                    numeric(g, m), numeric(g, f"{m}_se"), numeric(g, f"{m}_n"), strict=True
                )
                if np.isfinite(a)
            }
            if len(seen) == 1:
                _, out.loc[i, f"{m}_se"], out.loc[i, f"{m}_n"] = seen.pop()
    return out


__all__ = [
    "MEASURES",
    "behavior_table_html",
    "checkpoint_labels",
    "numeric",
    "ordered",
    "stage_se",
]
