"""The paper's claims, each with its effect, interval over seeds, MDE and a rule-based verdict.

docs/claims.md is the specification: the unit of replication (a family and seed), family as a
fixed effect, the regression's clustered errors and refusal, the MDE, the smallest effect of
interest of each claim and the verdict rule. This module computes exactly that, from the
checkpoint-level table; ``claim_tables`` is what the stats run calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from repcollapse.analyze.stats import design
from repcollapse.analyze.stats.claim_units import (
    Notes,
    at,
    base,
    chain,
    diff,
    item_se,
    note,
    units,
    without_bound,
)
from repcollapse.analyze.stats.config import StatsConfig
from repcollapse.analyze.stats.power import SeedEffect, mde, seed_effect, seed_mde
from repcollapse.analyze.stats.stage_table import stage_table
from repcollapse.analyze.tables.read import LayerConvention, Tables, checkpoint_table
from repcollapse.store_schema.lineage import CONTROL_SEQUENCE, noop_mask

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive (underpowered)"
CLAIM_COLUMNS: list[str] = [
    "claim",
    "effect",
    "ci_low",
    "ci_high",
    "mde",
    "n_seeds",
    "verdict",
    "rule",
    "direction",
    "delta",
    "se",
    "df",
    "n_units",
    "n_families",
    "detail",
]
DELTAS: dict[str, float] = {
    "erank_falls_vs_control": 0.02,
    "aniso_rises": 0.055,
    "cka_drift_grows": 0.105,
    "lora_overlap_grows": 0.095,
    "future_falls": 0.05,
    "collapse_predicts_future": 0.02,
    "replay_improves_tradeoff": 0.02,
    "order_matters": 0.02,
}
"""Smallest effect of interest of each claim: half the paper's change (docs/claims.md)."""
DIRECTIONS: dict[str, int] = {
    "erank_falls_vs_control": -1,
    "aniso_rises": 1,
    "cka_drift_grows": 1,
    "lora_overlap_grows": 1,
    "future_falls": -1,
    "collapse_predicts_future": -1,
    "replay_improves_tradeoff": 1,
    "order_matters": 0,
}
METRICS: tuple[str, ...] = (
    "erank_norm",
    "aniso_centered",
    "cka_base",
    "drift_base",
    "entropy",
    "lora_overlap_prev",
    "collapse_index",
)


@dataclass(frozen=True)
class ClaimsConfig:
    alpha: float = 0.05
    power: float = 0.8
    convention: LayerConvention = field(default_factory=LayerConvention)
    chain: str = "A"
    """The specialisation chain (general, math, code, safety) the claims are about."""
    reversed_chain: str = "D"
    """The chain with code before math (the order claim)."""
    control: str = CONTROL_SEQUENCE
    future: str = "future_score"
    target: str = "target_score"
    replay: str = "replay:general"
    """Mitigation labels starting with this are the general replay of the trade-off claim."""
    controls: tuple[str, ...] = ("target_score", "val_loss", "tokens_seen")
    deltas: dict[str, float] = field(default_factory=lambda: dict(DELTAS))

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"ClaimsConfig.alpha: expected in (0, 1), found {self.alpha!r}")
        if not 0 < self.power < 1:
            raise ValueError(f"ClaimsConfig.power: expected in (0, 1), found {self.power!r}")
        bad = {k: v for k, v in self.deltas.items() if not (np.isfinite(v) and v > 0)}
        if bad or set(self.deltas) != set(DELTAS):
            raise ValueError(
                f"ClaimsConfig.deltas: expected a positive value for each of {sorted(DELTAS)}, "
                f"found {self.deltas!r}"
            )


def verdict(effect: float, lo: float, hi: float, direction: int, delta: float) -> str:
    """The rule of docs/claims.md."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        # No interval, or one of zero width (every unit value equal: a measurement stuck at
        # its floor or ceiling says nothing about the claim).
        return INCONCLUSIVE
    if direction == 0:
        if -delta < lo and hi < delta:
            return NOT_REPRODUCED
        return REPRODUCED if (lo > 0 or hi < 0) else INCONCLUSIVE
    lo_o, hi_o = sorted((direction * lo, direction * hi))
    if hi_o < delta:  # no effect of interest fits: absent, opposite, or too small
        return NOT_REPRODUCED
    if lo_o > 0:
        return REPRODUCED
    return INCONCLUSIVE


def rule_text(direction: int, delta: float) -> str:
    if direction == 0:
        return (
            f"not reproduced if the CI lies inside (-{delta:g}, {delta:g}); "
            "reproduced if it excludes 0"
        )
    side = "> 0" if direction > 0 else "< 0"
    return (
        f"predicted {side}; not reproduced if the CI excludes every effect of size {delta:g} "
        "or more in that direction; reproduced if it excludes 0 on that side"
    )


# ---------------------------------------------------------------- per-unit values


def _row(
    claim: str, values: pd.DataFrame, cfg: ClaimsConfig, detail: str = "", left_out: str = ""
) -> dict:
    name = claim.split("[")[0]
    direction, delta = DIRECTIONS[name], cfg.deltas[name]
    eff: SeedEffect = seed_effect(values, cfg.alpha)
    ivar = float(values["ivar"].mean()) if len(values) and values["ivar"].notna().all() else None
    m = seed_mde(eff, cfg.alpha, cfg.power, two_sided=direction == 0, item_var=ivar)
    if eff.n_units == 0 and left_out:
        # the checkpoints may all be in the tables: what is missing is a family not left out
        detail = detail or "no family left with the checkpoints this claim needs"
    elif eff.n_units == 0:
        detail = detail or "the checkpoints this claim needs are not in the tables"
    elif not np.isfinite(eff.ci_low):
        detail = detail or "one seed per family: no interval over seeds"
    elif eff.se == 0:
        detail = detail or (
            "every unit value equal (a measurement at its floor or ceiling?): no interval"
        )
    return dict(
        claim=claim,
        effect=eff.effect,
        ci_low=eff.ci_low,
        ci_high=eff.ci_high,
        mde=m,
        n_seeds=eff.n_seeds,
        verdict=verdict(eff.effect, eff.ci_low, eff.ci_high, direction, delta),
        rule=rule_text(direction, delta),
        direction=direction,
        delta=delta,
        se=eff.se,
        df=eff.df,
        n_units=eff.n_units,
        n_families=eff.n_families,
        detail="; ".join(x for x in (detail, left_out) if x),
    )


# ---------------------------------------------------------------- the claims


def _erank_vs_control(ck: pd.DataFrame, cfg: ClaimsConfig, notes: Notes) -> pd.DataFrame:
    a, c = chain(ck, cfg.chain), chain(ck, cfg.control)
    last = at(a, "erank_norm", "last")
    if c.empty or last.empty:
        return last.iloc[:0]
    # The control at A's last stage index (matched tokens); its own last stage if shorter.
    k = int(a["stage_index"].max())
    ctrl = at(c, "erank_norm", min(k, int(c["stage_index"].max())))
    return diff(last, ctrl, notes, "erank_falls_vs_control")


def _along(
    col: str, start: int | str
) -> Callable[[pd.DataFrame, ClaimsConfig, Notes], pd.DataFrame]:
    def values(ck: pd.DataFrame, cfg: ClaimsConfig, notes: Notes) -> pd.DataFrame:
        a = chain(ck, cfg.chain)
        first = base(ck, col) if start == "base" else at(a, col, start)
        return diff(at(a, col, "last"), first, notes, col)

    return values


def _replay(
    ck: pd.DataFrame, cfg: ClaimsConfig, notes: Notes, kept: pd.DataFrame | None = None
) -> dict[str, pd.DataFrame]:
    """One claim per replay mitigation of ``ck``, its units from ``kept`` (less the families
    left out at a bound): a mitigation whose every family is left out is a claim with no units."""
    labels = sorted(
        m
        for m in ck.loc[ck["sequence"] == cfg.chain, "mitigation"].unique()
        if str(m).startswith(cfg.replay) and not noop_mask([m])[0]
    )
    ck = ck if kept is None else kept
    ck = ck.assign(_tradeoff=ck[cfg.future] + ck[cfg.target])
    if f"{cfg.future}_se" in ck and f"{cfg.target}_se" in ck:
        ck["_tradeoff_se"] = np.hypot(ck[f"{cfg.future}_se"], ck[f"{cfg.target}_se"])
    plain = at(chain(ck, cfg.chain), "_tradeoff", "last")
    return {
        f"replay_improves_tradeoff[{m}]": diff(
            at(chain(ck, cfg.chain, m), "_tradeoff", "last"), plain, notes, f"replay {m}"
        )
        for m in labels
    }


def _order(ck: pd.DataFrame, cfg: ClaimsConfig, notes: Notes) -> tuple[pd.DataFrame, str]:
    a, d = chain(ck, cfg.chain), chain(ck, cfg.reversed_chain)
    if a.empty or d.empty:
        return units(a.iloc[:0], cfg.future), ""

    def after_both(c: pd.DataFrame) -> int | None:
        at = c.groupby("stage_domain")["stage_index"].min()
        return int(max(at["math"], at["code"])) if {"math", "code"} <= set(at.index) else None

    ka, kd = after_both(a), after_both(d)
    if ka is None or kd is None or ka != kd:
        return units(a.iloc[:0], cfg.future), "math and code not done by the same stage in both"
    return diff(at(a, cfg.future, ka), at(d, cfg.future, kd), notes, "order_matters"), ""


def _regression_claim(ck: pd.DataFrame, cfg: ClaimsConfig, notes: Notes) -> dict:
    """Future score on the standardised collapse index, the controls and family fixed effects,
    with clustered errors; refused (inconclusive) when the design cannot be identified."""
    name = "collapse_predicts_future"
    direction, delta = DIRECTIONS[name], cfg.deltas[name]
    d = ck[~noop_mask(ck["mitigation"])]
    terms = ["collapse_index", *(c for c in cfg.controls if c in d and d[c].notna().any())]
    d = d.dropna(subset=[cfg.future, *terms]).copy()
    for t in list(terms):
        sd = float(d[t].std(ddof=1)) if len(d) > 1 else 0.0
        if not (np.isfinite(sd) and sd > 0):
            if t == "collapse_index":
                break
            terms.remove(t)
            continue
        d[t] = (d[t] - d[t].mean()) / sd
    row = dict(claim=name, direction=direction, delta=delta, rule=rule_text(direction, delta))
    nan = float("nan")
    n_seeds = int(d["seed"].nunique()) if len(d) else 0
    empty = dict(effect=nan, ci_low=nan, ci_high=nan, mde=nan, se=nan, df=nan, n_units=len(d))
    try:
        if len(d) < 2:
            raise design.Unidentifiable(
                f"{len(d)} checkpoint(s) with the collapse index, {cfg.future} and the controls"
            )
        if not d["collapse_index"].std(ddof=1) > 0:
            raise design.Unidentifiable("no variation of the collapse index over the checkpoints")
        x = design.design_matrix(d, terms, family_fe=d["model_family"].nunique() > 1)
        clusters, level = design.choose_clusters(d, x.shape[1])
        fit = design.fit_clustered(x, d[cfg.future], clusters, cfg.alpha)
    except design.Unidentifiable as exc:
        note(notes, f"{name}: model refused: {exc}.")
        return {
            **row,
            **empty,
            "n_seeds": n_seeds,
            "verdict": INCONCLUSIVE,
            "n_families": int(d["model_family"].nunique()) if len(d) else 0,
            "detail": f"model refused: {exc}",
        }
    t = fit.table(["collapse_index"]).iloc[0]
    se = float(t["std_err"])
    return {
        **row,
        "effect": float(t["estimate"]),
        "ci_low": float(t["ci_low"]),
        "ci_high": float(t["ci_high"]),
        "mde": mde(se, float(t["df"]), cfg.alpha, cfg.power),
        "n_seeds": n_seeds,
        "verdict": verdict(t["estimate"], t["ci_low"], t["ci_high"], direction, delta),
        "se": se,
        "df": float(t["df"]),
        "n_units": fit.n_obs,
        "n_families": int(d["model_family"].nunique()),
        "detail": (
            f"per SD of the collapse index; controls {', '.join(terms[1:]) or 'none'}; "
            f"{fit.n_clusters} clusters by {level}"
        ),
    }


def _with_detail(row: dict, detail: str) -> dict:
    if detail:
        row["detail"] = "; ".join(x for x in (row["detail"], detail) if x)
    return row


def claims_table(
    ck: pd.DataFrame, cfg: ClaimsConfig = ClaimsConfig(), notes: Notes | None = None
) -> pd.DataFrame:
    """One row per claim (docs/claims.md), from the checkpoint-level table."""
    notes = notes if notes is not None else {}
    ck = ck[~noop_mask(ck["mitigation"])].copy()
    # The unit's family is the model (design.family_key): a label shared by two models would
    # otherwise pair every seed of one with every seed of the other.
    ck["model_family"] = design.family_key(ck)
    if "cka_base" in ck and "drift_base" in ck:
        ck["drift_base"] = (1.0 - ck["cka_base"]).fillna(ck["drift_base"])
        if "cka_base_se" in ck:  # the drift's SE is the CKA's
            old = ck.get("drift_base_se", np.nan)
            ck["drift_base_se"] = ck["cka_base_se"].fillna(old)
    # A family whose score sits at 0 or 1 at every checkpoint is left out of the claims on that
    # score (docs/claims.md, revision of 2026-12-06); the geometry claims keep every family.
    on_future, why_f = without_bound(ck, (cfg.future,), notes)
    on_both, why_b = without_bound(ck, (cfg.future, cfg.target), notes)
    rows = [
        _row("erank_falls_vs_control", _erank_vs_control(ck, cfg, notes), cfg),
        _row("aniso_rises", _along("aniso_centered", "base")(ck, cfg, notes), cfg),
        _row("cka_drift_grows", _along("drift_base", 1)(ck, cfg, notes), cfg),
        _row("lora_overlap_grows", _along("lora_overlap_prev", 2)(ck, cfg, notes), cfg),
        _row("future_falls", _along(cfg.future, "base")(on_future, cfg, notes), cfg, "", why_f),
        _with_detail(_regression_claim(on_future, cfg, notes), why_f),
    ]
    replay = _replay(ck, cfg, notes, on_both)
    if replay:
        rows += [_row(k, v, cfg, "", why_b) for k, v in replay.items()]
    else:  # not tested: no family was left out of a claim with no chains to compare
        untested = f"no '{cfg.replay}' mitigation of sequence {cfg.chain}: not tested"
        note(
            notes, f"No '{cfg.replay}' mitigation of sequence {cfg.chain}: replay claim not tested."
        )
        rows.append(_row("replay_improves_tradeoff", units(ck.iloc[:0], cfg.future), cfg, untested))
    order, why = _order(on_future, cfg, notes)
    rows.append(_row("order_matters", order, cfg, why, why_f))
    out = pd.DataFrame(rows).reindex(columns=CLAIM_COLUMNS)
    return out.astype(
        {"n_seeds": "int64", "direction": "int64", "n_units": "int64", "n_families": "int64"}
    )


def claim_tables(tables: Tables, cfg: ClaimsConfig, notes: Notes) -> dict[str, pd.DataFrame]:
    """What the stats run writes: claims.parquet and stage_table.parquet."""
    names = [*METRICS]
    ck = checkpoint_table(tables, names, cfg.convention)
    se = item_se(tables, names, cfg.convention)
    if len(se.columns) > 2:
        ck = ck.merge(se, on=["store_id", "checkpoint"], how="left")
        note(
            notes,
            "MDE floors from the probe-example SEs in metrics.parquet (mean of the layers' SEs: "
            "an upper bound).",
        )
    return {
        "claims": claims_table(ck, cfg, notes),
        "stage_table": stage_table(ck, cfg.alpha),
    }


def claims_config(stats_cfg: StatsConfig) -> ClaimsConfig:
    """The claims' settings that a stats run's configuration fixes: alpha, layer convention,
    control sequence and controls. Not the response: the claims and their smallest effects of
    interest were fixed on ``future_score`` (docs/claims.md), whatever the regression explains."""
    return ClaimsConfig(
        alpha=stats_cfg.alpha,
        convention=stats_cfg.convention,
        control=stats_cfg.control_sequence,
        controls=tuple(stats_cfg.controls),
    )
