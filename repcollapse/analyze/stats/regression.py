"""Statistics on the metric tables: the plasticity regression, stage and order effects.

``run_stats(tables_dir)`` computes every stats table (regression, stage effects, order effects,
Pareto, falsification) from the tables alone and writes them beside metrics.parquet, with
``stats_notes.json`` holding plain statements about what the data could and could not support
(one seed: no confidence interval; one family: no random effect; ...). Thin data never raises:
it gives a smaller table and a note.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from repcollapse.analyze.stats import design
from repcollapse.analyze.stats.claims import claim_tables, claims_config
from repcollapse.analyze.stats.config import Notes, StatsConfig, add_note
from repcollapse.analyze.stats.effects import order_effects, stage_effects
from repcollapse.analyze.stats.falsification import run_falsification
from repcollapse.analyze.stats.pareto import pareto_table
from repcollapse.analyze.tables.read import (
    Tables,
    checkpoint_table,
    read_tables,
    write_stats_inputs,
)
from repcollapse.store_schema.lineage import noop_mask

# When rows are too few for every term, terms leave the model in this order (first listed
# first): the controls that matter least for the claim go before the collapse metrics.
DROP_ORDER: tuple[str, ...] = (
    "tokens_seen",
    "val_loss",
    "lora_overlap_prev",
    "entropy",
    "drift_base",
    "aniso_centered",
    "target_score",
    "erank_norm",
)
REG_COLUMNS: list[str] = [
    "term",
    "estimate",
    "std_err",
    "ci_low",
    "ci_high",
    "p_value",
    "model",
    "n_obs",
    "scale",
]

# ---------------------------------------------------------------- regression


def regression(ck: pd.DataFrame, cfg: StatsConfig, notes: Notes) -> pd.DataFrame:
    """Future score on standardised pre-adaptation metrics and controls (see module docstring).

    ``estimate`` is per one standard deviation of the predictor (``scale`` is that SD, so
    ``estimate / scale`` is the effect per raw unit).
    """
    sec = "regression"
    # A no-op checkpoint equals its parent: as a row it would count the parent twice.
    noop = noop_mask(ck["mitigation"])
    d = ck[~noop].copy()
    if noop.any():
        add_note(
            notes,
            sec,
            f"{int(noop.sum())} no-op checkpoint(s) left out (they equal their parents).",
        )
    if "lora_overlap_prev" in d:
        # A first stage has no earlier update to overlap with: its overlap is 0 by definition
        # (an empty subspace), not missing. Later stages with no value stay missing.
        first = d["stage_index"] <= 1
        n_fill = int((first & d["lora_overlap_prev"].isna()).sum())
        d.loc[first, "lora_overlap_prev"] = d.loc[first, "lora_overlap_prev"].fillna(0.0)
        if n_fill:
            add_note(
                notes,
                sec,
                f"LoRA overlap set to 0 for {n_fill} checkpoint(s) with no "
                "earlier stage (base and first stages).",
            )
    terms = [t for t in (*cfg.predictors, *cfg.controls) if t in d]
    absent = [t for t in (*cfg.predictors, *cfg.controls) if t not in d or d[t].isna().all()]
    if absent:
        add_note(notes, sec, f"Not in the tables, left out of the regression: {', '.join(absent)}.")
        terms = [t for t in terms if t not in absent]
    d = d.dropna(subset=[cfg.response])
    if d.empty:
        add_note(notes, sec, f"No {cfg.response} in checkpoints.parquet: no regression.")
        return pd.DataFrame(columns=REG_COLUMNS)
    n_before = len(d)
    d = d.dropna(subset=terms)
    if len(d) < n_before:
        add_note(notes, sec, f"{n_before - len(d)} checkpoint(s) dropped for missing predictors.")
    scale: dict[str, float] = {}
    for t in list(terms):
        sd = float(d[t].std(ddof=1)) if len(d) > 1 else 0.0
        if not np.isfinite(sd) or sd == 0.0:
            add_note(notes, sec, f"{t} is constant over the rows used: left out.")
            terms.remove(t)
            continue
        scale[t] = sd
        d[t] = (d[t] - d[t].mean()) / sd
    n_candidates = len(terms)
    # Below min_families: family fixed effects and errors clustered by replicate (design.py).
    few = d["model_family"].nunique() < cfg.min_families
    budget = design.term_budget(d, clustered=few, family_fe=few)
    terms, reduced = _select_terms(d, terms, notes, budget)
    if reduced:
        n_chains = design.chain_labels(d).nunique()
        add_note(
            notes,
            sec,
            f"Only {len(d)} usable checkpoint(s) in {n_chains} chain(s) for {n_candidates} "
            "predictor(s): the full model is not identifiable and is refused; "
            f"reduced model on {', '.join(terms) or 'nothing'} (descriptive only: no p-values).",
        )
    if not terms:
        add_note(
            notes,
            sec,
            f"Too few checkpoints ({len(d)}) or chains for any regression: none fitted.",
        )
        return pd.DataFrame(columns=REG_COLUMNS)
    d["sequence_label"] = d["sequence"].replace("", "base")
    n_fam = d["model_family"].nunique()
    if n_fam >= cfg.min_families and reduced:
        add_note(notes, sec, "Too few rows for the mixed model: OLS instead.")
    if n_fam >= cfg.min_families and not reduced:
        out = _fit_mixed(d, terms, cfg, notes)
        if out is not None:
            return _with_scale(out, scale)
    elif n_fam < cfg.min_families:
        add_note(
            notes,
            sec,
            f"{n_fam} model famil{'y' if n_fam == 1 else 'ies'} (fewer than "
            f"{cfg.min_families}): no random effect for family; fixed-effects OLS instead.",
        )
    return _with_scale(_fit_ols(d, terms, cfg, notes, reduced), scale)


def _select_terms(
    d: pd.DataFrame, terms: list[str], notes: Notes, budget: int
) -> tuple[list[str], bool]:
    """Terms in keep-priority order while the ``budget`` allows (design.term_budget: residual
    degrees of freedom and clusters), skipping any that is (nearly) a linear combination of
    those kept."""
    priority = {t: i for i, t in enumerate(reversed(DROP_ORDER))}
    kept: list[str] = []
    reduced = False
    for t in sorted(terms, key=lambda t: priority.get(t, len(priority))):
        if len(kept) >= budget:
            reduced = True
            continue
        x = design.design_matrix(d, [*kept, t], family_fe=False)
        if design.condition_number(x) > design.MAX_CONDITION:
            add_note(
                notes,
                "regression",
                f"{t} is (nearly) a linear combination of the other terms: left out.",
            )
            continue
        kept.append(t)
    return [t for t in terms if t in kept], reduced


def _fit_mixed(
    d: pd.DataFrame, terms: list[str], cfg: StatsConfig, notes: Notes
) -> pd.DataFrame | None:
    import statsmodels.formula.api as smf

    formula = f"{cfg.response} ~ {' + '.join(terms)}"
    vc = {"sequence": "0 + C(sequence_label)"} if d["sequence_label"].nunique() > 1 else None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = smf.mixedlm(formula, d, groups=d["model_family"], re_formula="1", vc_formula=vc)
            res = model.fit(reml=True)
    except (ValueError, np.linalg.LinAlgError) as exc:
        add_note(notes, "regression", f"MixedLM failed ({exc}): fixed-effects OLS instead.")
        return None
    msgs = {str(w.message) for w in caught}
    bse = res.bse_fe
    if (
        not res.converged
        or not np.all(np.isfinite(bse))
        or any("singular" in m.lower() for m in msgs)
    ):
        why = "did not converge" if not res.converged else "singular fit"
        add_note(notes, "regression", f"MixedLM {why}: fixed-effects OLS instead.")
        return None
    # statsmodels warns "on the boundary" during the search even when the optimum is inside;
    # judge by the estimates instead.
    comps = {"family": float(res.cov_re.iloc[0, 0])}
    if vc is not None:
        comps["sequence"] = float(np.asarray(res.vcomp)[0])
    at_zero = [k for k, v in comps.items() if v < 1e-6 * float(res.scale)]
    if at_zero:
        add_note(
            notes,
            "regression",
            f"MixedLM: the {' and '.join(at_zero)} variance is "
            "estimated at zero (a boundary fit); the fixed effects are still valid.",
        )
    ci = res.conf_int(cfg.alpha)
    rows = [
        dict(
            term=t,
            estimate=res.fe_params[t],
            std_err=bse[t],
            ci_low=ci.loc[t, 0],
            ci_high=ci.loc[t, 1],
            p_value=res.pvalues[t],
        )
        for t in res.fe_params.index
    ]
    rows += [
        dict(term=f"var({'model_family' if k == 'family' else k})", estimate=v)
        for k, v in comps.items()
    ]
    rows.append(dict(term="var(residual)", estimate=float(res.scale)))
    add_note(
        notes,
        "regression",
        f"MixedLM (REML) on {len(d)} checkpoints: random intercept per "
        f"model family ({d['model_family'].nunique()}), sequence as a variance component.",
    )
    return pd.DataFrame(rows).assign(model="mixedlm", n_obs=len(d))


def _fit_ols(
    d: pd.DataFrame, terms: list[str], cfg: StatsConfig, notes: Notes, reduced: bool
) -> pd.DataFrame:
    # Family as a fixed effect (two families cannot estimate a variance); seeds and sequences
    # through errors clustered by (family, sequence) cell or by chain (docs/claims.md).
    fam_fe = design.family_key(d).nunique() > 1  # two models of one label: two families
    x = design.design_matrix(d, terms, fam_fe)
    clusters, level = design.choose_clusters(d, x.shape[1])
    try:
        fit = design.fit_clustered(x, d[cfg.response], clusters, cfg.alpha)
    except design.Unidentifiable as exc:
        add_note(notes, "regression", f"Model refused, none fitted: {exc}.")
        return pd.DataFrame(columns=REG_COLUMNS)
    label = "ols" + ("-reduced" if reduced else "") + ("+fe(family)" if fam_fe else "")
    label += f"+cluster({level})"
    tab = fit.table(["Intercept", *terms]).drop(columns="df")
    if reduced:  # a model chosen because the full one was refused: no test of anything
        tab["p_value"] = np.nan
    rows = tab.to_dict("records")
    rows.append(dict(term="var(residual)", estimate=fit.resid_var))
    add_note(
        notes,
        "regression",
        f"OLS ({label}) on {len(d)} checkpoints: standard errors robust to dependence within "
        f"{fit.n_clusters} clusters by {level} ({fit.kind}, t with Bell-McCaffrey df).",
    )
    if level == "chain":
        add_note(
            notes,
            "regression",
            "Too few (family, sequence) cells to cluster on: an offset shared by the seeds of "
            "a sequence is not covered by the intervals.",
        )
    return pd.DataFrame(rows).assign(model=label, n_obs=len(d))


def _with_scale(df: pd.DataFrame, scale: dict[str, float]) -> pd.DataFrame:
    df["scale"] = df["term"].map(scale).astype(float)
    return df.reindex(columns=REG_COLUMNS)


# ---------------------------------------------------------------- driver


def checkpoint_frame(tables: Tables, cfg: StatsConfig) -> pd.DataFrame:
    """The per-checkpoint table every analysis here starts from."""
    names = sorted({*cfg.predictors, *cfg.stage_metrics, "collapse_index"})
    return checkpoint_table(tables, names, cfg.convention)


def run_stats(
    tables_dir: str | Path, cfg: StatsConfig | None = None, write: bool = True
) -> dict[str, pd.DataFrame]:
    """Every stats table, keyed by table name; written beside metrics.parquet when ``write``
    (``cfg``: the default ``StatsConfig()`` when None)."""
    cfg = cfg or StatsConfig()
    tables = read_tables(tables_dir, cfg.convention.option_set or None)
    notes: Notes = {"conventions": [cfg.convention.describe()]}
    if tables.option_set is not None:
        add_note(notes, "inputs", f"Metric rows of option set {tables.option_set!r}.")
    if tables.checkpoints is None:
        raise FileNotFoundError(
            f"checkpoints.parquet is missing from {str(tables.root)!r}: nothing to analyse "
            "(run `repcollapse analyze metrics STORE --out DIR` first)"
        )
    for name in tables.missing():
        add_note(notes, "inputs", f"{name} table missing: analyses that need it are skipped.")
    ck = checkpoint_frame(tables, cfg)
    if ck["seed"].nunique() < 2:
        add_note(notes, "inputs", "One seed: no confidence interval over seeds anywhere.")
    out = {
        "regression": regression(ck, cfg, notes),
        "stage_effects": stage_effects(ck, cfg, notes),
        "order_effects": order_effects(ck, cfg, notes),
        "pareto": pareto_table(ck, notes),
        "falsification": run_falsification(tables, ck, cfg, notes),
    }
    out.update(claim_tables(tables, claims_config(cfg), notes))
    if write:
        for name, df in out.items():
            df.to_parquet(tables.root / f"{name}.parquet", index=False)
        (tables.root / "stats_notes.json").write_text(json.dumps(notes, indent=1))
        write_stats_inputs(tables)  # what the report checks them against (stale_stats)
    out["notes"] = pd.DataFrame(
        [(s, t) for s, ts in notes.items() for t in ts], columns=["section", "note"]
    )
    return out
