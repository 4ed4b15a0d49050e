"""``objectives``: each metric's change against the parent checkpoint, per training objective
(mean over stages, families and seeds, bars ± 1 standard error)."""

from __future__ import annotations

import altair as alt
import numpy as np

from repcollapse.analyze.report.figure_context import Built, Ctx, SkipFigure
from repcollapse.analyze.report.numbers import AXIS_FORMAT
from repcollapse.analyze.report.style import LABELS, stage_scale
from repcollapse.analyze.tables.read import with_parent
from repcollapse.store_schema.lineage import NO_MITIGATION

OBJECTIVE_METRICS: tuple[str, ...] = (
    "erank_norm",
    "pr_norm",
    "aniso_centered",
    "topk_var_10",
    "entropy",
    "collapse_index",
)


def fig_objectives(ctx: Ctx) -> Built:
    metrics = [x for x in OBJECTIVE_METRICS if ctx.ck[x].notna().any()]
    if not metrics:
        raise SkipFigure("none of the metrics it compares are in the tables")
    d = with_parent(ctx.ck, metrics)
    d = d[(d["stage_index"] > 0) & (d["mitigation"] == NO_MITIGATION)]
    long = d.melt(
        id_vars=["stage_kind", "stage"],
        value_vars=[f"delta_{x}" for x in metrics],
        var_name="metric",
        value_name="delta",
    ).dropna()
    if long.empty:
        raise SkipFigure("no stage checkpoint with a parent")
    long["metric"] = long["metric"].str.removeprefix("delta_")
    long["objective"] = np.where(
        long["stage_kind"].isin(["sft", "dpo"]),
        long["stage"],
        long["stage"] + " (" + long["stage_kind"] + ")",
    )
    g = long.groupby(["objective", "stage", "metric"], as_index=False)["delta"]
    out = g.agg(mean_delta="mean", sd="std", n="size")
    out["se"] = (out["sd"] / np.sqrt(out["n"])).fillna(0.0)
    out["lo"], out["hi"] = out["mean_delta"] - out["se"], out["mean_delta"] + out["se"]
    out["panel"] = out["metric"].map(LABELS).fillna(out["metric"])
    out = out.drop(columns="sd")
    title = "Change vs parent by objective (mean over stages, families, seeds; bars ± 1 s.e.)"
    base = alt.Chart().encode(x=alt.X("objective:N", title="objective (stage)"))
    bars = base.mark_bar().encode(
        y=alt.Y(
            "mean_delta:Q",
            title="change vs parent (metric units)",
            axis=alt.Axis(format=AXIS_FORMAT),
        ),
        color=alt.Color("stage:N", scale=stage_scale(out["stage"]), title="stage"),
        tooltip=["objective", "metric", alt.Tooltip("mean_delta:Q", format=".4~g"), "se", "n"],
    )
    rules = base.mark_rule().encode(y="lo:Q", y2="hi:Q")
    chart = (
        alt.layer(bars, rules, data=out)
        .properties(width=200, height=140)
        .facet(facet=alt.Facet("panel:N", title=None), columns=3)
        .resolve_scale(y="independent")
        .properties(title=title)
    )
    return chart, out, title
