"""The stage table (the paper's Table 4) as the report, the notebook API and the demo show it.

One computation, ``stats.stage_table`` (means over seeds with t intervals, one row per family,
sequence, mitigation and stage): the report shows ``stage_table.parquet`` when ``analyze stats``
wrote it, and computes the same table from the metric tables otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from repcollapse.analyze.report import template
from repcollapse.analyze.report.behavior_view import MEASURES, stage_se
from repcollapse.analyze.report.numbers import sig, with_ci, with_se
from repcollapse.analyze.stats.stage_table import QUANTITIES
from repcollapse.analyze.stats.stage_table import stage_table as stats_stage_table
from repcollapse.analyze.tables.read import LayerConvention, checkpoint_table, read_tables
from repcollapse.store_schema.lineage import NO_MITIGATION

TABLE4: dict[str, str] = {
    "target_score": "Target score",
    "erank_norm": "Eff. rank",
    "aniso_centered": "Anisotropy",
    "cka_base": "CKA to base",
    "entropy": "Logit entropy",
    "lora_overlap_prev": "LoRA overlap",
    "future_score": "Future score",
}
"""Table 4 of the paper, column by column (after 'Checkpoint')."""
assert set(TABLE4) == set(QUANTITIES), "the report's Table 4 and stats' stage table drifted"
_NAMES = ["erank_norm", "aniso_centered", "cka_base", "drift_base", "entropy", "lora_overlap_prev"]


def compute(tables_dir: str | Path, convention: LayerConvention | None = None) -> pd.DataFrame:
    """``stats.stage_table`` computed from the metric tables (what stage_table.parquet holds)."""
    conv = convention or LayerConvention()
    tables = read_tables(tables_dir, conv.option_set or None)
    return stats_stage_table(checkpoint_table(tables, _NAMES, conv))


def labels(st: pd.DataFrame, seeds: bool = True) -> pd.Series:
    """'base', or 'A/02-math', 'A[replay:general:0.10]/02-math', with ' (n seeds)' when n > 1
    and ``seeds`` (the report has a Seeds column instead)."""
    mit = np.where(st["mitigation"] == NO_MITIGATION, "", "[" + st["mitigation"] + "]")
    lab = st["sequence"] + mit + "/" + st["stage_index"].map("{:02d}".format) + "-" + st["stage"]
    lab = lab.where(st["stage_index"] > 0, "base")
    many = (st["n_seeds"] > 1) & seeds
    return lab.where(~many, lab + " (" + st["n_seeds"].astype(str) + " seeds)")


def stage_table(
    tables_dir: str | Path,
    sequence: str | None = None,
    convention: LayerConvention | None = None,
) -> pd.DataFrame:
    """The paper's Table 4 for every chain, mitigated ones included (or one ``sequence``): one
    row of means over seeds per base model and per stage. CKA to base is 1 - drift_base where
    only the drift is in the tables."""
    st = compute(tables_dir, convention)
    if sequence is not None:
        st = st[(st["stage_index"] == 0) | (st["sequence"] == sequence)]
    out = st[list(TABLE4)].rename(columns=TABLE4)
    out.insert(0, "Checkpoint", labels(st))
    if st["model_family"].nunique() > 1:
        out.insert(0, "Model family", st["model_family"])
    return out.reset_index(drop=True)


def formatted(st: pd.DataFrame) -> pd.DataFrame:
    """The report's stage table: 'mean [low, high]' per cell in significant digits."""
    out = pd.DataFrame({"Checkpoint": labels(st), "Seeds": st["n_seeds"]})
    if st["model_family"].nunique() > 1:
        out.insert(0, "Model family", st["model_family"])
    for q, head in TABLE4.items():
        out[head] = [
            with_ci(m, lo, hi)
            for m, lo, hi in zip(st[q], st[f"{q}_ci_low"], st[f"{q}_ci_high"], strict=True)
        ]
    return out.reset_index(drop=True)


def stage_table_html(st: pd.DataFrame, ck: pd.DataFrame | None = None) -> str:
    """The report's stage table: each cell the mean over seeds with its interval in small type
    beneath (one line per cell keeps the table as wide as the page, not taller than it).

    A row of one seed has no interval over seeds; its behavioural cells (target and future
    score) show the checkpoint's own standard error over items instead, 'mean ± SE' with the
    n beneath, read from the checkpoint table ``ck`` (checkpoints.parquet's ``<key>_se``,
    ``<key>_n``)."""
    if st is None or st.empty:
        return '<p class="note">No checkpoints for a stage table.</p>'
    many = st["model_family"].nunique() > 1
    lab = labels(st, seeds=False)
    behavioural = [q for q in TABLE4 if q in MEASURES]
    se = stage_se(st, ck, behavioural)
    rows = []
    for i in range(len(st)):
        r = st.iloc[i]
        cells = []
        for q in TABLE4:
            lo, hi = r[f"{q}_ci_low"], r[f"{q}_ci_high"]
            ci = f"[{sig(lo)}, {sig(hi)}]" if np.isfinite(lo) and np.isfinite(hi) else ""
            s = se.iloc[i][f"{q}_se"] if q in behavioural else np.nan
            if not ci and np.isfinite(s) and np.isfinite(r[q]):
                n = se.iloc[i][f"{q}_n"]
                cells.append((with_se(r[q], s), f"(n={int(n)})" if np.isfinite(n) else ""))
                continue
            cells.append((sig(r[q]), ci))
        names = [r["model_family"]] if many else []
        rows.append(dict(labels=[*names, lab.iloc[i], str(int(r["n_seeds"]))], cells=cells))
    head = [*(["Model family"] if many else []), "Checkpoint", "Seeds", *TABLE4.values()]
    return template.render(template.STAGE_TABLE, head=head, rows=rows, n_labels=3 if many else 2)
