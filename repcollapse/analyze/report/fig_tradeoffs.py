"""Trade-offs: future-task score against the collapse index over all checkpoints
(``collapse_future``) and the mitigations at the end of each sequence with their Pareto
frontier (``pareto``)."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from repcollapse.analyze.report.figure_context import Built, Ctx, SkipFigure
from repcollapse.analyze.report.numbers import AXIS_FORMAT
from repcollapse.analyze.report.style import stage_scale
from repcollapse.analyze.stats.pareto import pareto_table


def padded_range(d: pd.DataFrame, col: str, by: str, frac: float = 0.1) -> pd.DataFrame:
    """``d`` with ``{col}_lo`` / ``{col}_hi``: each ``by`` group's range widened by ``frac`` of
    itself, or by 2% of the value (at least 0.01) where the range is zero. A constant column
    with ``zero=False`` otherwise gets a degenerate domain that Vega draws at a 'nice' tick of
    its own (two scores of 0.75 plotted at a tick labelled 1)."""
    g = d.groupby(by)[col]
    lo, hi = g.transform("min"), g.transform("max")
    pad = ((hi - lo) * frac).where(hi > lo, np.maximum(hi.abs() * 0.02, 0.01))
    return d.assign(**{f"{col}_lo": lo - pad, f"{col}_hi": hi + pad})


def fig_collapse_future(ctx: Ctx) -> Built:
    d = ctx.ck.dropna(subset=["collapse_index", "future_score"])
    if len(d) < 3:
        raise SkipFigure(f"{len(d)} checkpoint(s) with both collapse index and future score")
    d = d[["model_family", "checkpoint", "stage", "collapse_index", "future_score"]].copy()
    slope, icpt = np.polyfit(d["collapse_index"], d["future_score"], 1)
    d["fitted"] = icpt + slope * d["collapse_index"]
    r = float(np.corrcoef(d["collapse_index"], d["future_score"])[0, 1])
    title = (
        f"Future score vs collapse index (OLS slope {slope:+.3g} per index unit, "
        f"r = {r:.2f}, n = {len(d)})"
    )
    pts = (
        alt.Chart(d)
        .mark_point(filled=True, size=40, opacity=0.8)
        .encode(
            x=alt.X("collapse_index:Q", title="collapse index (mean within-family z-score)"),
            y=alt.Y(
                "future_score:Q",
                title="future-task score (0-1)",
                scale=alt.Scale(zero=False),
                axis=alt.Axis(format=AXIS_FORMAT),
            ),
            color=alt.Color(
                "stage:N", scale=stage_scale(sorted(d["stage"].unique())), title="stage"
            ),
            shape=alt.Shape("model_family:N", title="model family"),
            tooltip=["checkpoint", "model_family", "collapse_index", "future_score"],
        )
    )
    line = alt.Chart(d).mark_line(color="black").encode(x="collapse_index:Q", y="fitted:Q")
    chart = (pts + line).properties(width=520, height=320, title=title)
    return chart, d.reset_index(drop=True), title


def fig_pareto(ctx: Ctx) -> Built:
    p = pareto_table(ctx.ck)
    p = p[p["final_step"]].dropna(subset=["collapse_index", "future_score"])
    many = p.groupby(["model_family", "sequence"])["mitigation"].transform("nunique") > 1
    if not many.any():
        raise SkipFigure("one mitigation per sequence: no mitigation to compare")
    p = p[many]
    d = p.assign(
        frontier=np.where(p["on_frontier"], "on frontier", "dominated"),
        panel=p["model_family"] + " / sequence " + p["sequence"],
    ).reset_index(drop=True)
    d = padded_range(d, "future_score", "panel")
    title = (
        "Mitigations at the end of each sequence (filled: on the Pareto frontier of target "
        "score, collapse, future score)"
    )
    tips = ["mitigation", "target_score", "target_kept", "collapse_index", "future_score"]
    y_style = dict(
        title="future-task score (0-1)",
        scale=alt.Scale(zero=False, nice=False),
        axis=alt.Axis(format=AXIS_FORMAT),
    )
    y = alt.Y("future_score:Q", **y_style)
    pts = (
        alt.Chart()
        .mark_point(size=90, strokeWidth=2)
        .encode(
            x=alt.X("collapse_index:Q", title="collapse index (lower is better)"),
            y=y,
            color=alt.Color("mitigation:N", title="mitigation"),
            fill=alt.condition("datum.on_frontier", alt.Color("mitigation:N"), alt.value("white")),
            tooltip=[*tips, "n_seeds"],
        )
    )
    # Invisible marks at the padded range fix each panel's y domain (see padded_range).
    pad = (
        alt.Chart()
        .mark_rule(opacity=0)
        .encode(
            x="collapse_index:Q", y=alt.Y("future_score_lo:Q", **y_style), y2="future_score_hi:Q"
        )
    )
    front = (
        alt.Chart()
        .transform_filter("datum.on_frontier")
        .mark_line(color="gray", strokeDash=[4, 3])
        .encode(x="collapse_index:Q", y="future_score:Q")
    )
    chart = (
        alt.layer(pts, pad, front, data=d)
        .properties(width=300, height=220)
        .facet(facet=alt.Facet("panel:N", title=None), columns=2)
        .resolve_scale(x="independent", y="independent")
        .properties(title=title)
    )
    return chart, d, title
