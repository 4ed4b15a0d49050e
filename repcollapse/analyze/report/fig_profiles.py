"""Profiles along one chain: each metric per layer (``layerwise``) and effective rank per token
span (``span_rank``), one line per stage, mean over seeds."""

from __future__ import annotations

from dataclasses import replace

import altair as alt
import pandas as pd

from repcollapse.analyze.report.figure_context import Built, Ctx, SkipFigure, chain, stage_key
from repcollapse.analyze.report.numbers import AXIS_FORMAT
from repcollapse.analyze.report.style import LABELS, stage_scale
from repcollapse.analyze.tables.read import layerwise, select_metrics
from repcollapse.store_schema.records import SPANS as SPANS_ORDER

LAYER_METRICS: tuple[str, ...] = (
    "erank_norm",
    "pr_norm",
    "aniso_centered",
    "aniso_uncentered",
    "drift_base",
    "topk_var_10",
)
PANEL_COLUMNS = 3
"""Panels per row: six metrics in one strip are unreadable at page width (2287 px wide)."""
_CHAIN_COLS = ["store_id", "checkpoint", "model_family", "sequence", "stage_index", "stage"]


def fig_layerwise(ctx: Ctx) -> Built:
    m = ctx.tables.metrics
    if m is None:
        raise SkipFigure("metrics.parquet missing")
    lw = layerwise(m, LAYER_METRICS)
    if lw.empty:
        raise SkipFigure("no per-layer metrics (domain 'all', span 'all')")
    d = chain(ctx)[_CHAIN_COLS].merge(lw, on=["store_id", "checkpoint"])
    d = d.groupby(
        ["model_family", "sequence", "stage_index", "stage", "metric", "layer"], as_index=False
    ).agg(value=("value", "mean"), n_seeds=("value", "size"))
    d["panel"] = d["metric"].map(LABELS).fillna(d["metric"])
    d["stage_label"] = stage_key(d)
    order = d.sort_values("stage_index")["stage"].tolist()
    seqs = ", ".join(sorted(d["sequence"].unique()))
    title = f"Layerwise metrics per stage (sequence {seqs}; mean over seeds)"
    panels = [LABELS.get(x, x) for x in LAYER_METRICS]

    def one(fam: str, g: pd.DataFrame) -> alt.FacetChart:
        # A wrapped facet per family, stacked: a row facet cannot wrap its columns.
        return (
            alt.Chart(g)
            .mark_line(point=True)
            .encode(
                x=alt.X("layer:Q", title="layer (0 = embeddings)"),
                y=alt.Y(
                    "value:Q",
                    title=None,
                    scale=alt.Scale(zero=False),
                    axis=alt.Axis(format=AXIS_FORMAT),
                ),
                color=alt.Color("stage:N", scale=stage_scale(order), title="stage"),
                detail="stage_index:O",
                tooltip=["stage_label", "layer", alt.Tooltip("value:Q", format=".4~g"), "n_seeds"],
            )
            .properties(width=230, height=150)
            .facet(
                facet=alt.Facet("panel:N", title=None, sort=panels),
                columns=PANEL_COLUMNS,
            )
            .resolve_scale(y="independent")
            .properties(title=f"model family {fam}")
        )

    charts = [one(f, g) for f, g in d.groupby("model_family", sort=True)]
    return alt.vconcat(*charts).properties(title=title), d, title


def fig_span_rank(ctx: Ctx) -> Built:
    m = ctx.tables.metrics
    if m is None:
        raise SkipFigure("metrics.parquet missing")
    er = m[(m["metric"] == "erank_norm") & (m["domain"] == "all") & (m["span"] != "all")]
    if er.empty:
        raise SkipFigure("no per-span effective rank in metrics.parquet")
    conv = ctx.cfg.convention
    parts = [
        select_metrics(er, ["erank_norm"], replace(conv, span=s)).assign(span=s)
        for s in er["span"].unique()
    ]
    d = chain(ctx)[_CHAIN_COLS].merge(pd.concat(parts), on=["store_id", "checkpoint"])
    d = d.groupby(["model_family", "sequence", "stage_index", "stage", "span"], as_index=False).agg(
        value=("value", "mean"), n_seeds=("value", "size")
    )
    d["stage_label"] = stage_key(d)
    spans = [s for s in SPANS_ORDER if s in set(d["span"])] + sorted(
        set(d["span"]) - set(SPANS_ORDER)
    )
    layers = conv.describe().split(";")[0].removeprefix("Hidden-state metrics: ")
    title = f"Effective rank by token span per stage ({layers}; mean over seeds)"
    chart = (
        alt.Chart(d)
        .mark_line(point=True)
        .encode(
            x=alt.X("span:N", sort=spans, title="token span"),
            y=alt.Y(
                "value:Q",
                title="eff. rank / min(N-1, d)",
                scale=alt.Scale(zero=False),
                axis=alt.Axis(format=AXIS_FORMAT),
            ),
            color=alt.Color(
                "stage:N", scale=stage_scale(d.sort_values("stage_index")["stage"]), title="stage"
            ),
            detail="stage_index:O",
            tooltip=["stage_label", "span", alt.Tooltip("value:Q", format=".4~g"), "n_seeds"],
        )
        .properties(width=300, height=200)
        .facet(facet=alt.Facet("model_family:N", title="model family"), columns=2)
        .properties(title=title)
    )
    return chart, d, title
