"""Figures from the metric tables (Altair), each saved as HTML, PNG and the data it plotted.

Every figure writes ``<name>.png`` (vl-convert), ``<name>.html`` (self-contained) and
``<name>.data.csv`` (exactly the DataFrame drawn, so a test or a reader can check it against the
tables), and ``figures.json`` lists them with a plain note for each one that was skipped because
its inputs are missing. Colours are per stage name and fixed (``style.stage_color``), so "math" is the
same red in every figure.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from repcollapse.analyze.report.style import (
    LABELS,
    FiguresConfig,
    stage_scale,
)
from repcollapse.analyze.stats.pareto import pareto_table
from repcollapse.analyze.stats.regression import StatsConfig, checkpoint_frame
from repcollapse.analyze.tables.read import (
    Tables,
    layerwise,
    read_tables,
    select_metrics,
    with_parent,
)
from repcollapse.store_schema.lineage import CONTROL_SEQUENCE, NO_MITIGATION
from repcollapse.store_schema.records import SPANS as SPANS_ORDER

LAYER_METRICS: tuple[str, ...] = (
    "erank_norm",
    "pr_norm",
    "aniso_centered",
    "aniso_uncentered",
    "drift_base",
    "topk_var_10",
)
OBJECTIVE_METRICS: tuple[str, ...] = (
    "erank_norm",
    "pr_norm",
    "aniso_centered",
    "topk_var_10",
    "entropy",
    "collapse_index",
)


class SkipFigure(Exception):
    """Raised by a figure builder whose inputs are missing; the message says which."""


@dataclass
class Ctx:
    tables: Tables
    ck: pd.DataFrame
    cfg: StatsConfig


def choose_sequence(ck: pd.DataFrame) -> str:
    """The chain shown in per-stage figures: 'A' if present, else the longest plain chain."""
    plain = ck[(ck["mitigation"] == NO_MITIGATION) & ~ck["sequence"].isin(["", CONTROL_SEQUENCE])]
    if plain.empty:
        raise SkipFigure("no sequence of stages without mitigation")
    if "A" in set(plain["sequence"]):
        return "A"
    n = plain.groupby("sequence")["stage_index"].max()
    return str(n[n == n.max()].sort_index().index[0])


def _chain(ctx: Ctx) -> pd.DataFrame:
    """Base plus the chosen sequence's plain checkpoints, per family."""
    parts = []
    for _fam, g in ctx.ck.groupby("model_family"):
        try:
            seq = choose_sequence(g)
        except SkipFigure:
            continue
        parts.append(
            g[
                (g["stage_index"] == 0) | ((g["sequence"] == seq) & (g["mitigation"] == "none"))
            ].assign(sequence=seq)
        )
    if not parts:
        raise SkipFigure("no sequence of stages without mitigation")
    return pd.concat(parts, ignore_index=True)


def _stage_key(df: pd.DataFrame) -> pd.Series:
    return df["stage_index"].astype(str) + " " + df["stage"]


def fig_layerwise(ctx: Ctx) -> tuple[alt.TopLevelMixin, pd.DataFrame, str]:
    m = ctx.tables.metrics
    if m is None:
        raise SkipFigure("metrics.parquet missing")
    lw = layerwise(m, LAYER_METRICS)
    if lw.empty:
        raise SkipFigure("no per-layer metrics (domain 'all', span 'all')")
    chain = _chain(ctx)[
        ["store_id", "checkpoint", "model_family", "sequence", "stage_index", "stage"]
    ]
    d = chain.merge(lw, on=["store_id", "checkpoint"])
    d = d.groupby(
        ["model_family", "sequence", "stage_index", "stage", "metric", "layer"], as_index=False
    ).agg(value=("value", "mean"), n_seeds=("value", "size"))
    d["panel"] = d["metric"].map(LABELS).fillna(d["metric"])
    d["stage_label"] = _stage_key(d)
    order = d.sort_values("stage_index")["stage"].tolist()
    title = f"Layerwise metrics per stage (sequence {', '.join(sorted(d['sequence'].unique()))}; mean over seeds)"
    chart = (
        alt.Chart(d)
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:Q", title="layer (0 = embeddings)"),
            y=alt.Y("value:Q", title="value (unitless)", scale=alt.Scale(zero=False)),
            color=alt.Color("stage:N", scale=stage_scale(order), title="stage"),
            detail="stage_index:O",
            tooltip=["stage_label", "layer", "value", "n_seeds"],
        )
        .properties(width=170, height=130)
        .facet(
            row=alt.Row("model_family:N", title="model family"),
            column=alt.Column(
                "panel:N", title=None, sort=[LABELS.get(x, x) for x in LAYER_METRICS]
            ),
        )
        .resolve_scale(y="independent")
        .properties(title=title)
    )
    return chart, d, title


def fig_objectives(ctx: Ctx) -> tuple[alt.TopLevelMixin, pd.DataFrame, str]:
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
        y=alt.Y("mean_delta:Q", title="change vs parent (metric units)"),
        color=alt.Color("stage:N", scale=stage_scale(out["stage"]), title="stage"),
        tooltip=["objective", "metric", "mean_delta", "se", "n"],
    )
    rules = base.mark_rule().encode(y="lo:Q", y2="hi:Q")
    chart = (
        alt.layer(bars, rules, data=out)
        .properties(width=150, height=140)
        .facet(facet=alt.Facet("panel:N", title=None), columns=3)
        .resolve_scale(y="independent")
        .properties(title=title)
    )
    return chart, out, title


def fig_collapse_future(ctx: Ctx) -> tuple[alt.TopLevelMixin, pd.DataFrame, str]:
    d = ctx.ck.dropna(subset=["collapse_index", "future_score"])
    if len(d) < 3:
        raise SkipFigure(f"{len(d)} checkpoint(s) with both collapse index and future score")
    d = d[["model_family", "checkpoint", "stage", "collapse_index", "future_score"]].copy()
    slope, icpt = np.polyfit(d["collapse_index"], d["future_score"], 1)
    d["fitted"] = icpt + slope * d["collapse_index"]
    r = float(np.corrcoef(d["collapse_index"], d["future_score"])[0, 1])
    title = (
        f"Future score vs collapse index (OLS slope {slope:+.3f} per index unit, "
        f"r = {r:.2f}, n = {len(d)})"
    )
    pts = (
        alt.Chart(d)
        .mark_point(filled=True, size=40, opacity=0.8)
        .encode(
            x=alt.X("collapse_index:Q", title="collapse index (mean within-family z-score)"),
            y=alt.Y("future_score:Q", title="future-task score (0-1)", scale=alt.Scale(zero=False)),
            color=alt.Color(
                "stage:N", scale=stage_scale(sorted(d["stage"].unique())), title="stage"
            ),
            shape=alt.Shape("model_family:N", title="model family"),
            tooltip=["checkpoint", "model_family", "collapse_index", "future_score"],
        )
    )
    line = alt.Chart(d).mark_line(color="black").encode(x="collapse_index:Q", y="fitted:Q")
    chart = (pts + line).properties(width=420, height=300, title=title)
    return chart, d.reset_index(drop=True), title


def fig_lora_overlap(ctx: Ctx) -> tuple[alt.TopLevelMixin, pd.DataFrame, str]:
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
    title = (
        f"LoRA update overlap ||U_a^T U_b||^2 / k, mean over modules (seed "
        f"{int(keep['seed'].min())}; random baseline {d['baseline'].mean():.3f})"
    )
    chart = (
        alt.Chart(d)
        .mark_rect()
        .encode(
            x=alt.X("checkpoint_b:N", sort=alt.EncodingSortField("order_b"), title="checkpoint"),
            y=alt.Y("checkpoint_a:N", sort=alt.EncodingSortField("order_a"), title="checkpoint"),
            color=alt.Color(
                "overlap:Q", scale=alt.Scale(scheme="viridis", domainMin=0), title="overlap (0-1)"
            ),
            tooltip=["checkpoint_a", "checkpoint_b", "overlap"],
        )
        .properties(width=260, height=260)
        .facet(facet=alt.Facet("model_family:N", title="model family"), columns=2)
        .resolve_scale(x="independent", y="independent")
        .properties(title=title)
    )
    return chart, d, title


def fig_pareto(ctx: Ctx) -> tuple[alt.TopLevelMixin, pd.DataFrame, str]:
    p = pareto_table(ctx.ck)
    p = p[p["final_step"]].dropna(subset=["collapse_index", "future_score"])
    many = p.groupby(["model_family", "sequence"])["mitigation"].transform("nunique") > 1
    if not many.any():
        raise SkipFigure("one mitigation per sequence: no mitigation to compare")
    p = p[many]
    if p.empty:
        raise SkipFigure("no mitigation comparison (collapse index and future score needed)")
    d = p.assign(
        frontier=np.where(p["on_frontier"], "on frontier", "dominated"),
        panel=p["model_family"] + " / sequence " + p["sequence"],
    ).reset_index(drop=True)
    title = "Mitigations at the end of each sequence (filled: on the Pareto frontier of target score, collapse, future score)"
    tips = [
        "mitigation",
        "target_score",
        "target_kept",
        "collapse_index",
        "future_score",
        "n_seeds",
    ]
    pts = (
        alt.Chart()
        .mark_point(size=90, strokeWidth=2)
        .encode(
            x=alt.X("collapse_index:Q", title="collapse index (lower is better)"),
            y=alt.Y("future_score:Q", title="future-task score (0-1)", scale=alt.Scale(zero=False)),
            color=alt.Color("mitigation:N", title="mitigation"),
            fill=alt.condition("datum.on_frontier", alt.Color("mitigation:N"), alt.value("white")),
            tooltip=tips,
        )
    )
    front = (
        alt.Chart()
        .transform_filter("datum.on_frontier")
        .mark_line(color="gray", strokeDash=[4, 3])
        .encode(x="collapse_index:Q", y="future_score:Q")
    )
    chart = (
        alt.layer(front, pts, data=d)
        .properties(width=260, height=200)
        .facet(facet=alt.Facet("panel:N", title=None), columns=2)
        .resolve_scale(x="independent", y="independent")
        .properties(title=title)
    )
    return chart, d, title


def fig_span_rank(ctx: Ctx) -> tuple[alt.TopLevelMixin, pd.DataFrame, str]:
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
    chain = _chain(ctx)[
        ["store_id", "checkpoint", "model_family", "sequence", "stage_index", "stage"]
    ]
    d = chain.merge(pd.concat(parts), on=["store_id", "checkpoint"])
    d = d.groupby(["model_family", "sequence", "stage_index", "stage", "span"], as_index=False).agg(
        value=("value", "mean"), n_seeds=("value", "size")
    )
    d["stage_label"] = _stage_key(d)
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
            y=alt.Y("value:Q", title="eff. rank / min(N-1, d)", scale=alt.Scale(zero=False)),
            color=alt.Color(
                "stage:N", scale=stage_scale(d.sort_values("stage_index")["stage"]), title="stage"
            ),
            detail="stage_index:O",
            tooltip=["stage_label", "span", "value", "n_seeds"],
        )
        .properties(width=300, height=200)
        .facet(facet=alt.Facet("model_family:N", title="model family"), columns=2)
        .properties(title=title)
    )
    return chart, d, title


BUILDERS: dict[str, Callable[[Ctx], tuple[alt.TopLevelMixin, pd.DataFrame, str]]] = {
    "layerwise": fig_layerwise,
    "objectives": fig_objectives,
    "collapse_future": fig_collapse_future,
    "lora_overlap": fig_lora_overlap,
    "pareto": fig_pareto,
    "span_rank": fig_span_rank,
}


def make_figures(
    tables_dir: str | Path,
    out_dir: str | Path,
    cfg: StatsConfig | None = None,
    html: bool = True,
    *,
    figures: FiguresConfig | None = None,
) -> list[Path]:
    """Write every figure that its inputs allow; returns the PNG paths written.

    ``figures.json`` in ``out_dir`` lists each figure (title, files) or why it was skipped.
    ``figures`` (when given) sets the HTML switch and the PNG scale; ``html`` is its shorthand.
    """
    figures = figures or FiguresConfig(html=html)
    html = figures.html
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = read_tables(tables_dir)
    if tables.checkpoints is None:
        raise FileNotFoundError(f"checkpoints.parquet is missing from {str(tables.root)!r}")
    cfg = cfg or StatsConfig()
    ctx = Ctx(tables, checkpoint_frame(tables, cfg), cfg)
    manifest, pngs = [], []
    for name, build in BUILDERS.items():
        try:
            chart, data, title = build(ctx)
        except SkipFigure as why:
            manifest.append(dict(name=name, skipped=f"{name}: skipped ({why})"))
            continue
        data.to_csv(out / f"{name}.data.csv", index=False)
        chart.save(str(out / f"{name}.png"), scale_factor=figures.scale_factor)
        if html:
            chart.save(str(out / f"{name}.html"), inline=True)
        pngs.append(out / f"{name}.png")
        manifest.append(
            dict(
                name=name,
                title=title,
                png=f"{name}.png",
                data=f"{name}.data.csv",
                html=f"{name}.html" if html else None,
            )
        )
    (out / "figures.json").write_text(json.dumps(manifest, indent=1))
    return pngs
