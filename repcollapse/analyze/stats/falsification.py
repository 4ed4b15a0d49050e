"""Falsification checks (paper section 5.2): each gives pass, fail or 'not run: <why>'.

- shuffled-label probe: a probe trained on shuffled domain labels must sit at chance;
- no-op adapter: a matched stage that changes nothing must leave the metrics where they were;
- random-domain replay: under this intervention collapse and future score must still move in
  opposite directions (the predictive link holds where nobody designed it to);
- fixed vs target-domain probe: the collapse signal on the fixed probe ('all') and on the
  stage's own domain must agree in sign, else the claim depends on the probe construction.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from repcollapse.analyze.stats.config import StatsConfig
from repcollapse.analyze.tables.read import Tables, select_metrics, with_parent
from repcollapse.store_schema.lineage import noop_mask

COLUMNS: list[str] = ["check", "metric", "statistic", "threshold", "result", "detail"]
SHUFFLED_TOL = 0.1
"""|shuffled-probe accuracy - chance| must stay below this."""
NOOP_RATIO = 0.25
"""A no-op's largest |change| must stay below this fraction of the median |change| of real stages."""
NOOP_METRICS: tuple[str, ...] = (
    "erank_norm",
    "pr_norm",
    "aniso_centered",
    "topk_var_10",
    "drift_base",
    "entropy",
)
PROBE_METRICS: tuple[str, ...] = ("erank_norm", "aniso_centered")


def _row(
    check: str, metric: str, statistic: float, threshold: float, result: str, detail: str
) -> dict:
    return dict(
        check=check,
        metric=metric,
        statistic=statistic,
        threshold=threshold,
        result=result,
        detail=detail,
    )


def _not_run(check: str, why: str) -> dict:
    return _row(check, "", np.nan, np.nan, f"not run: {why}", "")


def is_noop(ck: pd.DataFrame) -> pd.Series:
    return pd.Series(noop_mask(ck["mitigation"]), index=ck.index)


def shuffled_probe(tables: Tables) -> list[dict]:
    check = "shuffled-label probe at chance"
    m = tables.metrics
    if m is None or not (m["metric"] == "probe_acc_shuffled").any():
        return [_not_run(check, "no probe_acc_shuffled in metrics.parquet")]
    doms = sorted(set(m["domain"]) - {"all"})
    chance = 1.0 / (len(doms) if len(doms) > 1 else 6)
    sh = m[(m["metric"] == "probe_acc_shuffled") & (m["domain"] == "all") & (m["span"] == "all")]
    per_ckpt = sh.groupby(["store_id", "checkpoint"])["value"].mean()
    dev = float((per_ckpt - chance).abs().max())
    real = m.loc[m["metric"] == "probe_acc", "value"]
    detail = (
        f"chance = 1/{round(1 / chance)} = {chance:.3f}; mean shuffled accuracy "
        f"{per_ckpt.mean():.3f} over {len(per_ckpt)} checkpoints (mean over layers)"
        + (f"; real-label probe {real.mean():.3f}" if len(real) else "")
    )
    result = "pass" if dev < SHUFFLED_TOL else "fail"
    return [_row(check, "probe_acc_shuffled", dev, SHUFFLED_TOL, result, detail)]


def noop_adapters(ck: pd.DataFrame, cfg: StatsConfig) -> list[dict]:
    check = "no-op adapter leaves metrics unmoved"
    noop = is_noop(ck)
    if not noop.any():
        return [_not_run(check, "no no-op checkpoints (mitigation 'noop')")]
    metrics = [m for m in NOOP_METRICS if m in ck and ck[m].notna().any()]
    d = with_parent(ck, metrics)
    real = d[~noop.to_numpy() & (d["stage_index"] > 0) & (d["mitigation"] == "none")]
    rows = []
    for m in metrics:
        nd = d.loc[noop.to_numpy(), f"delta_{m}"].dropna().abs()
        ref = float(real[f"delta_{m}"].dropna().abs().median()) if len(real) else np.nan
        if nd.empty or not np.isfinite(ref) or ref == 0:
            rows.append(
                _row(
                    check,
                    m,
                    np.nan,
                    NOOP_RATIO,
                    "not run: no parent or no real stage to compare with",
                    "",
                )
            )
            continue
        ratio = float(nd.max()) / ref
        rows.append(
            _row(
                check,
                m,
                ratio,
                NOOP_RATIO,
                "pass" if ratio < NOOP_RATIO else "fail",
                f"largest |change| of {len(nd)} no-op checkpoint(s) {nd.max():.3g}; "
                f"median |change| of {len(real)} real stages {ref:.3g}",
            )
        )
    return rows or [_not_run(check, "none of the metrics it needs are in the tables")]


def random_replay(ck: pd.DataFrame) -> list[dict]:
    check = "random-domain replay keeps the collapse-future link"
    rnd = ck[ck["mitigation"].str.startswith("replay:random")]
    if rnd.empty:
        return [
            _not_run(check, "no random-domain replay checkpoints (mitigation 'replay:random*')")
        ]
    if "collapse_index" not in ck or ck["collapse_index"].isna().all():
        return [_not_run(check, "no collapse_index in metrics.parquet")]
    key = ["store_id", "sequence", "stage_index", "seed"]
    plain = ck[ck["mitigation"] == "none"][[*key, "collapse_index", "future_score"]]
    pair = rnd.merge(plain, on=key, suffixes=("", "_none")).dropna(
        subset=["collapse_index", "collapse_index_none", "future_score", "future_score_none"]
    )
    if pair.empty:
        return [_not_run(check, "no unmitigated counterpart (same sequence, stage, seed)")]
    dc = float((pair["collapse_index"] - pair["collapse_index_none"]).mean())
    df = float((pair["future_score"] - pair["future_score_none"]).mean())
    result = "pass" if dc * df <= 0 else "fail"
    return [
        _row(
            check,
            "collapse_index",
            dc * df,
            0.0,
            result,
            f"vs the unmitigated chain over {len(pair)} checkpoint(s): mean change in "
            f"collapse index {dc:+.3g}, in future score {df:+.3g} (pass: opposite signs)",
        )
    ]


def fixed_vs_target_probe(tables: Tables, ck: pd.DataFrame, cfg: StatsConfig) -> list[dict]:
    check = "fixed vs target-domain probe agree"
    m = tables.metrics
    if m is None:
        return [_not_run(check, "no metrics.parquet")]
    doms = set(m["domain"]) - {"all"}
    stages = ck[
        (ck["stage_index"] > 0) & (ck["mitigation"] == "none") & ck["stage_domain"].isin(doms)
    ]
    if stages.empty:
        return [_not_run(check, "no per-domain metrics for the stages' own domains")]
    rows = []
    for metric in PROBE_METRICS:
        fixed = ck[[*_K, "parent"]].assign(value=_values(m, ck, metric, cfg.convention.domain, cfg))
        fixed_d = _delta(fixed).reindex(stages.set_index(_K).index)
        target = []
        for dom, g in stages.groupby("stage_domain"):
            vals = ck[[*_K, "parent"]].assign(value=_values(m, ck, metric, dom, cfg))
            target.append(_delta(vals).reindex(g.set_index(_K).index))
        target_d = pd.concat(target).reindex(fixed_d.index)
        ok = fixed_d.notna() & target_d.notna()
        if not ok.any():
            rows.append(_row(check, metric, np.nan, 0.0, "not run: no per-domain values", ""))
            continue
        a, b = float(fixed_d[ok].mean()), float(target_d[ok].mean())
        agree = float((np.sign(fixed_d[ok]) == np.sign(target_d[ok])).mean())
        rows.append(
            _row(
                check,
                metric,
                a * b,
                0.0,
                "pass" if a * b > 0 else "fail",
                f"mean change vs parent over {int(ok.sum())} stages: fixed probe "
                f"{a:+.3g}, target-domain probe {b:+.3g}; signs agree in "
                f"{agree:.0%} of stages",
            )
        )
    return rows


_K = ["store_id", "checkpoint"]


def _values(
    m: pd.DataFrame, ck: pd.DataFrame, metric: str, domain: str, cfg: StatsConfig
) -> np.ndarray:
    conv = replace(cfg.convention, domain=domain)
    sel = select_metrics(m, [metric], conv)
    if domain != "all":  # select_metrics falls back to 'all'; here that would be a false match
        have = m[(m["metric"] == metric) & (m["domain"] == domain)]
        if have.empty:
            return np.full(len(ck), np.nan)
    return ck[_K].merge(sel, on=_K, how="left")["value"].to_numpy()


def _delta(vals: pd.DataFrame) -> pd.Series:
    d = with_parent(vals, ["value"])
    return d.set_index(_K)["delta_value"]


def run_falsification(
    tables: Tables, ck: pd.DataFrame, cfg: StatsConfig, notes: dict[str, list[str]]
) -> pd.DataFrame:
    rows = [
        *shuffled_probe(tables),
        *noop_adapters(ck, cfg),
        *random_replay(ck),
        *fixed_vs_target_probe(tables, ck, cfg),
    ]
    out = pd.DataFrame(rows, columns=COLUMNS)
    sec = notes.setdefault("falsification", [])
    for r in out.itertuples():
        if r.result.startswith("not run") and r.metric == "":
            sec.append(f"{r.check}: {r.result}.")
    return out
