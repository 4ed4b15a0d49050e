"""Does a re-run reproduce a study? Its tables against a reference's, cell by cell.

`repcollapse study compare REF NEW` answers the reproduction check of docs/study.md: the same
cells (family, sequence, mitigation, seed, stage) in two tables directories, every behavioural
score and every metric value side by side, and each re-run value against the reference's
interval over seeds in the stage table. Checkpoints are matched by their lineage columns, not
their names, so a re-run under another naming scheme still pairs up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from repcollapse.analyze.stats.claims import METRICS
from repcollapse.analyze.stats.stage_table import QUANTITIES, stage_table
from repcollapse.analyze.tables.read import (
    LayerConvention,
    Tables,
    checkpoint_table,
    read_tables,
)

CELL: list[str] = ["model_family", "sequence", "mitigation", "seed", "stage_index"]
"""What one checkpoint is, whatever it is called: the lineage columns of checkpoints.parquet."""
METRIC_KEY: list[str] = ["metric", "layer", "domain", "span"]


class CompareError(ValueError):
    """A directory that does not hold the tables a comparison needs."""


@dataclass(frozen=True)
class Comparison:
    scores: pd.DataFrame
    """One row per shared checkpoint and behavioural score: ``ref``, ``new``, ``abs_diff``."""
    metrics: pd.DataFrame
    """Per metric: rows paired, rows identical, the largest absolute and relative difference,
    rows whose value is on one side only (NaN on the other)."""
    within: pd.DataFrame
    """One row per stage-table row and quantity with a reference interval: the re-run's mean,
    the reference's mean over the same seeds, the reference's half-width, ``shift`` (their
    difference in half-widths) and ``inside`` (shift <= 1)."""
    only_ref: int
    only_new: int
    paired: int
    """Checkpoints in both, whether or not any of their values is recorded."""

    def lines(self) -> list[str]:
        s, w = self.scores, self.within
        same = int((s["abs_diff"] == 0).sum())
        # a value on one side only has no difference to measure: told, not left out silently
        one = int((s["ref"].isna() ^ s["new"].isna()).sum())
        out = [
            f"checkpoints: {self.paired} paired, {self.only_ref} only in "
            f"the reference, {self.only_new} only in the re-run",
            f"behavioural scores: {same} of {len(s)} identical; largest difference "
            f"{_fmt(s['abs_diff'].max())}" + _one_sided(one),
        ]
        if len(self.metrics):
            m = self.metrics
            worst = m.loc[m["max_rel_diff"].idxmax()]
            where = f" ({worst['metric']})" if worst["max_rel_diff"] > 0 else ""
            out.append(
                f"metric values: {int(m['identical'].sum())} of {int(m['paired'].sum())} "
                f"identical; largest relative difference {_fmt(worst['max_rel_diff'])}{where}"
                + _one_sided(int(m["one_sided"].sum()))
            )
        else:  # no metrics.parquet on a side, or no row of it pairs
            out.append("metric values: none paired")
        if len(w):
            out.append(
                f"stage-table values within the reported interval: {int(w['inside'].sum())} of "
                f"{len(w)} (largest shift {_fmt(w['shift'].max())} half-widths from the "
                "reference's value for the same seeds)"
            )
        else:  # a one-seed reference has no interval to measure a shift in
            out.append("stage-table values: none with a reference interval (one seed?) to compare")
        return out


def _one_sided(n: int) -> str:
    return f"; {n} present on one side only" if n else ""


def _fmt(x: float) -> str:
    return "n/a" if np.isnan(x) else f"{x:.3g}"  # inf: a difference on a zero-width interval


def tables_dir(path: str | Path) -> Path:
    """A tables directory, or a study output (its ``merged/``) or published result (``tables/``)."""
    p = Path(path)
    for d in (p, p / "tables", p / "merged"):
        if (d / "checkpoints.parquet").is_file():
            return d
    raise CompareError(
        f"study compare: expected a tables directory (checkpoints.parquet) at {p}, "
        f"{p / 'tables'} or {p / 'merged'}, found none"
    )


def _checkpoints(tables: Tables) -> pd.DataFrame:
    """checkpoints.parquet as the stats read it: one row per checkpoint, with the stage-table
    metrics under the default layer convention."""
    ck = checkpoint_table(tables, list(METRICS), LayerConvention())
    ck.loc[ck["stage_index"] == 0, ["sequence", "mitigation"]] = ["", "none"]
    # The base is one checkpoint whichever seed's chain named it.
    ck.loc[ck["stage_index"] == 0, "seed"] = -1
    return ck


def _model_families(ref: pd.DataFrame, new: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both sides with ``model_family`` refined by ``model_id`` where one label covers several
    models on either side (two tiny llamas), as the stats do (design.family_key): the cell would
    otherwise pair every checkpoint of one model with its twin of the other. Refined on both
    sides alike, so a one-model shard still pairs with its model in a two-model reference; a
    label with one model on each side is left alone (its model_id may be written differently)."""
    if "model_id" not in ref or "model_id" not in new:
        return ref, new
    shared: set[str] = set()
    for ck in (ref, new):
        n = ck["model_id"].astype(str).groupby(ck["model_family"].astype(str)).nunique()
        shared |= set(n.index[n > 1])

    def refine(ck: pd.DataFrame) -> pd.DataFrame:
        fam = ck["model_family"].astype(str)
        key = fam.where(~fam.isin(shared), fam + "/" + ck["model_id"].astype(str))
        return ck.assign(model_family=key)

    return refine(ref), refine(new)


def _scores(ref: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    skip = {*CELL, *METRICS, "lora_rank", "tokens_seen"}
    cols = [
        c
        for c in ref.columns
        if c in new.columns
        and c not in skip
        and pd.api.types.is_numeric_dtype(ref[c])
        and not c.endswith(("_se", "_n"))
    ]
    m = ref.merge(new, on=CELL, suffixes=("_ref", "_new"))
    rows = [
        m[CELL].assign(score=c, ref=m[f"{c}_ref"].astype(float), new=m[f"{c}_new"].astype(float))
        for c in cols
    ]
    s = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=[*CELL, "score"])
    s = s[s["ref"].notna() | s["new"].notna()]
    both_nan = s["ref"].isna() & s["new"].isna()
    return s.assign(abs_diff=(s["new"] - s["ref"]).abs().where(~both_nan, 0.0)).reset_index(
        drop=True
    )


def _metrics(t_ref: Tables, t_new: Tables, ref: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    if t_ref.metrics is None or t_new.metrics is None:
        return pd.DataFrame(
            columns=["metric", "paired", "identical", "max_abs_diff", "max_rel_diff", "one_sided"]
        )

    def keyed(t: Tables, ck: pd.DataFrame) -> pd.DataFrame:
        # The rows the stats read (read_tables: one option set, each metric's newest version; a
        # raw read would pair every option set and version of one side with every other).
        m = t.metrics[["store_id", "checkpoint", *METRIC_KEY, "value"]]
        return m.merge(ck[["store_id", "checkpoint", *CELL]], on=["store_id", "checkpoint"])

    j = keyed(t_ref, ref).merge(
        keyed(t_new, new), on=[*CELL, *METRIC_KEY], suffixes=("_ref", "_new")
    )
    diff = (j["value_new"] - j["value_ref"]).abs()
    same = (j["value_new"] == j["value_ref"]) | (j["value_new"].isna() & j["value_ref"].isna())
    rel = diff / j["value_ref"].abs().where(j["value_ref"].abs() > 0)
    # a value that moves off an exact 0 (the base's drift from itself): infinitely far, not 0
    rel = rel.where(~((j["value_ref"] == 0) & (diff > 0)), np.inf)
    one = j["value_new"].isna() ^ j["value_ref"].isna()
    g = j.assign(_d=diff.fillna(0.0), _s=same, _r=rel.fillna(0.0), _o=one).groupby("metric")
    return pd.DataFrame(
        {
            "paired": g.size(),
            "identical": g["_s"].sum(),
            "max_abs_diff": g["_d"].max(),
            "max_rel_diff": g["_r"].max(),
            "one_sided": g["_o"].sum(),
        }
    ).reset_index()


def _within(ref: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Each stage-table value of the re-run against the reference's over the same seeds, in
    units of the reference's interval half-width over all its seeds: ``shift`` <= 1 is inside.

    The same seeds because a re-run of one shard is one seed, and one seed's value is not an
    estimate of the mean over three (it falls outside that mean's interval often); the full
    reference's half-width because that is the uncertainty the published table states.
    """
    key = ["model_family", "sequence", "mitigation", "stage_index"]
    # The checkpoints both sides have, cell by cell: a seed only the re-run ran (or a chain one
    # side stopped short) would otherwise enter one side's mean and not the other's.
    both = ref[CELL].merge(new[CELL], on=CELL).drop_duplicates()
    full = stage_table(ref)
    same = stage_table(ref.merge(both, on=CELL))
    now = stage_table(new.merge(both, on=CELL))
    rows = []
    for q in QUANTITIES:
        half = (full[f"{q}_ci_high"] - full[f"{q}_ci_low"]) / 2
        j = (
            now[[*key, "n_seeds", q]]
            .merge(same[[*key, q]], on=key, suffixes=("", "_ref"))
            .merge(full[key].assign(half=half), on=key)
        )
        j = j[j["half"].notna() & j[q].notna() & j[f"{q}_ref"].notna()]
        gap = (j[q] - j[f"{q}_ref"]).abs()
        # A zero-width reference interval (every seed equal, e.g. a score at its floor) holds
        # only its own value: any difference is infinitely many half-widths away.
        shift = (gap / j["half"].where(j["half"] > 0)).where(j["half"] > 0, np.inf)
        shift = shift.where(gap > 0, 0.0)
        rows.append(
            j[[*key, "n_seeds"]].assign(
                quantity=q,
                new=j[q],
                ref=j[f"{q}_ref"],
                half_width=j["half"],
                shift=shift,
                inside=shift <= 1.0,
            )
        )
    return pd.concat(rows, ignore_index=True)


def compare(ref_path: str | Path, new_path: str | Path) -> Comparison:
    d_ref, d_new = tables_dir(ref_path), tables_dir(new_path)
    t_ref, t_new = read_tables(d_ref), read_tables(d_new)  # each side read once
    ref, new = _model_families(_checkpoints(t_ref), _checkpoints(t_new))
    cells_ref = set(map(tuple, ref[CELL].to_numpy().tolist()))
    cells_new = set(map(tuple, new[CELL].to_numpy().tolist()))
    if not cells_ref & cells_new:
        raise CompareError(
            f"study compare: expected checkpoints in common between {d_ref} and {d_new} "
            f"(by {', '.join(CELL)}), found none"
        )
    return Comparison(
        scores=_scores(ref, new),
        metrics=_metrics(t_ref, t_new, ref, new),
        within=_within(ref, new),
        only_ref=len(cells_ref - cells_new),
        only_new=len(cells_new - cells_ref),
        paired=len(cells_ref & cells_new),
    )
