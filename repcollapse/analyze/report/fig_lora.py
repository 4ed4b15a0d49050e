"""``lora_overlap``: how much each stage's LoRA update overlaps every other's (the subspace
overlap of docs/metrics.md), one heatmap per family, one seed of the plain chains."""

from __future__ import annotations

import altair as alt
import pandas as pd

from repcollapse.analyze.report.figure_context import Built, Ctx, SkipFigure
from repcollapse.store_schema.lineage import NO_MITIGATION

DIAGONAL_COLOR = "#d9d9d9"
"""A checkpoint against itself has overlap 1 by definition: drawn grey, not on the colour scale
(it would take the top of the scale and wash out the pairs that matter)."""


def fig_lora_overlap(ctx: Ctx) -> Built:
    lo = ctx.tables.lora_overlap
    if lo is None or lo.empty:
        raise SkipFigure("lora_overlap.parquet missing or empty")
    ck = ctx.ck
    # One seed of the plain chains keeps the matrix readable; the table has every pair.
    keep = ck[(ck["mitigation"] == NO_MITIGATION) & (ck["stage_index"] > 0)]
    keep = keep[keep["seed"] == keep.groupby("store_id")["seed"].transform("min")]
    pair = lo.groupby(
        ["store_id", "model_family", "checkpoint_a", "checkpoint_b"], as_index=False
    ).agg(overlap=("overlap", "mean"), baseline=("baseline", "mean"))
    pair = pair[pair["checkpoint_a"] != pair["checkpoint_b"]]
    flipped = pair.rename(columns={"checkpoint_a": "checkpoint_b", "checkpoint_b": "checkpoint_a"})
    both = pd.concat([pair, flipped]).drop_duplicates(["store_id", "checkpoint_a", "checkpoint_b"])
    order = keep.sort_values(["sequence", "stage_index"]).assign(order=lambda x: range(len(x)))
    o = order.set_index(["store_id", "checkpoint"])["order"]
    both["order_a"] = pd.MultiIndex.from_frame(both[["store_id", "checkpoint_a"]]).map(o.get)
    both["order_b"] = pd.MultiIndex.from_frame(both[["store_id", "checkpoint_b"]]).map(o.get)
    d = both.dropna(subset=["order_a", "order_b"]).sort_values(
        ["model_family", "order_a", "order_b"]
    )
    if d.empty:
        raise SkipFigure("no LoRA overlap between stage checkpoints of the plain chains")
    d = d.reset_index(drop=True)
    diag = (
        d.drop_duplicates(["store_id", "checkpoint_a"])[
            ["store_id", "model_family", "checkpoint_a", "order_a"]
        ]
        .assign(checkpoint_b=lambda x: x["checkpoint_a"], order_b=lambda x: x["order_a"])
        .assign(is_self=True)
    )
    drawn = pd.concat([d.assign(is_self=False), diag], ignore_index=True)
    title = (
        f"LoRA update overlap ||U_a^T U_b||^2 / k, mean over modules (seed "
        f"{int(keep['seed'].min())}; random baseline {d['baseline'].mean():.3g}; "
        "diagonal masked)"
    )
    base = alt.Chart().encode(
        x=alt.X("checkpoint_b:N", sort=alt.EncodingSortField("order_b"), title="checkpoint"),
        y=alt.Y("checkpoint_a:N", sort=alt.EncodingSortField("order_a"), title="checkpoint"),
    )
    cells = (
        base.transform_filter("!datum.is_self")
        .mark_rect()
        .encode(
            color=alt.Color(
                "overlap:Q", scale=alt.Scale(scheme="viridis", domainMin=0), title="overlap (0-1)"
            ),
            tooltip=["checkpoint_a", "checkpoint_b", alt.Tooltip("overlap:Q", format=".4~g")],
        )
    )
    masked = base.transform_filter("datum.is_self").mark_rect(color=DIAGONAL_COLOR)
    chart = (
        alt.layer(cells, masked, data=drawn)
        .properties(width=260, height=260)
        .facet(facet=alt.Facet("model_family:N", title="model family"), columns=2)
        .resolve_scale(x="independent", y="independent")
        .properties(title=title)
    )
    return chart, d, title
