"""The report's opening paragraph, written from the numbers: which stage moved each metric
most (against the matched general-SFT control, with its interval over seeds when there is
one), the claims' verdicts, and whether the regression could be fitted at all."""

from __future__ import annotations

import numpy as np
import pandas as pd

from repcollapse.analyze.report.numbers import sig
from repcollapse.analyze.report.style import LABELS

SUMMARY_METRICS: tuple[str, ...] = (
    "erank_norm",
    "aniso_centered",
    "drift_base",
    "entropy",
    "collapse_index",
    "future_score",
)
"""The metrics the summary names a stage for, in this order (where the tables have them)."""
NAMES: dict[str, str] = {"future_score": "Future-task score", "erank_norm": "Effective rank"}
REFUSAL_WORDS: tuple[str, ...] = ("refused", "not identifiable", "degrees of freedom")
"""Words of a regression note that mean the model was cut down or not fitted (stats/regression)."""


def _interval(r: pd.Series) -> str:
    if np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"]):
        return f"95% CI [{sig(r['ci_low'])}, {sig(r['ci_high'])}], n = {int(r['n_seeds'])}"
    return f"no interval, n = {int(r['n_seeds'])}"


def stage_sentences(effects: pd.DataFrame) -> list[str]:
    """Per metric, the stage whose effect against the control is largest in size (pooled over
    families and sequences where the stats pooled them)."""
    if effects is None or effects.empty:
        return []
    pooled = effects[effects["model_family"] == "all"]
    d = (pooled if not pooled.empty else effects).dropna(subset=["effect"])
    out = []
    for metric in SUMMARY_METRICS:
        g = d[d["metric"] == metric]
        if g.empty:
            continue
        r = g.loc[g["effect"].abs().idxmax()]
        where = (
            "" if r["sequence"] == "all" else f" (sequence {r['sequence']}, {r['model_family']})"
        )
        basis = "against the control" if r.get("basis") == "vs control" else str(r.get("basis"))
        out.append(
            f"{NAMES.get(metric, LABELS.get(metric, metric))}: moved most by the {r['stage']} stage{where}, "
            f"{sig(r['effect'])} {basis} ({_interval(r)})."
        )
    return out


def claims_sentence(claims: pd.DataFrame | None) -> str | None:
    """The verdicts counted, then each claim named with its verdict."""
    if claims is None or claims.empty:
        return None
    counts = claims["verdict"].value_counts()
    head = ", ".join(f"{n} {v}" for v, n in counts.items())
    each = "; ".join(f"{c}: {v}" for c, v in zip(claims["claim"], claims["verdict"], strict=True))
    return f"Claims of the paper ({len(claims)}): {head}. {each}."


def regression_warnings(notes: pd.DataFrame) -> list[str]:
    """The regression notes saying the model had too few residual degrees of freedom and was
    reduced or refused (shown as warnings, not buried in the notes)."""
    reg = notes[notes["section"] == "regression"]["note"]
    return [n for n in reg if any(w in n.lower() for w in REFUSAL_WORDS)]


def summary(stats: dict[str, pd.DataFrame]) -> list[str]:
    """The summary's sentences, in reading order."""
    out = stage_sentences(stats.get("stage_effects"))
    c = claims_sentence(stats.get("claims"))
    if c:
        out.append(c)
    fals = stats.get("falsification")
    if fals is not None and not fals.empty:
        n = fals["result"].value_counts()
        out.append(
            f"Falsification checks: {int(n.get('pass', 0))} passed, {int(n.get('fail', 0))} "
            f"failed, {int(len(fals) - n.get('pass', 0) - n.get('fail', 0))} not run."
        )
    reg = stats.get("regression")
    if regression_warnings(stats["notes"]) or reg is None or reg.empty:
        out.append(
            "The regression of future learning on collapse was reduced or not fitted: "
            "too few checkpoints for its predictors (see its section)."
        )
    return out
