"""``loss_curves``: the training loss at every optimizer step, one panel per chain, the chain's
stages one after another along the x axis (coloured by stage), one line per seed.

The losses are each stage's train_log.json (docs/INTERFACES.md), carried by extract into the
store's ``behavior_json`` and by ``analyze metrics`` into checkpoints.parquet's
``train_losses`` column (JSON text): the report reads the tables only, never a run directory.
"""

from __future__ import annotations

import json

import altair as alt
import pandas as pd

from repcollapse.analyze.report.figure_context import Built, Ctx, SkipFigure
from repcollapse.analyze.report.numbers import AXIS_FORMAT
from repcollapse.analyze.report.style import stage_scale
from repcollapse.analyze.stats.design import family_key
from repcollapse.store_schema.lineage import NO_MITIGATION
from repcollapse.store_schema.schema import TRAIN_LOSSES


def _losses(raw: object) -> list[float]:
    """A ``train_losses`` cell as floats; [] for none ('' , NaN from an older table, bad text)."""
    if not isinstance(raw, str) or not raw:
        return []
    try:
        out = json.loads(raw)
    except json.JSONDecodeError:
        return []
    return [float(x) for x in out] if isinstance(out, list) else []


def loss_history(ck: pd.DataFrame) -> pd.DataFrame:
    """One row per (checkpoint, optimizer step): panel, seed, stage, the step within the stage
    (1..) and along the chain (stages concatenated in stage order), and the loss."""
    if TRAIN_LOSSES not in ck:
        return pd.DataFrame()
    d = ck[ck["stage_index"] > 0].assign(_fam=family_key(ck))
    mit = d["mitigation"].astype(str)
    d = d.assign(
        panel=d["sequence"].astype(str)
        + mit.where(mit == NO_MITIGATION, "[" + mit + "]").replace(NO_MITIGATION, "")
    )
    if d["_fam"].nunique() > 1:
        d["panel"] = d["_fam"] + " · " + d["panel"]
    rows = []
    for (panel, seed), g in d.groupby(["panel", "seed"], sort=True):
        offset = 0
        for r in g.sort_values("stage_index").itertuples(index=False):
            losses = _losses(getattr(r, TRAIN_LOSSES))
            stage = f"{int(r.stage_index)} {r.stage}"
            for i, loss in enumerate(losses, start=1):
                rows.append((panel, int(seed), r.checkpoint, stage, r.stage, i, offset + i, loss))
            offset += len(losses)
    cols = ["panel", "seed", "checkpoint", "stage_key", "stage", "stage_step", "step", "loss"]
    return pd.DataFrame(rows, columns=cols)


def fig_loss_curves(ctx: Ctx) -> Built:
    out = loss_history(ctx.tables.checkpoints)
    if out.empty:
        raise SkipFigure(
            "no training losses in checkpoints.parquet (its train_losses column comes from "
            "each stage's train_log.json, through extract and analyze metrics)"
        )
    title = "Training loss per optimizer step (each chain's stages one after another)"
    chart = (
        alt.Chart(out)
        # points too where stages are short: a stage of one step is otherwise invisible
        .mark_line(
            strokeWidth=1.2,
            point=bool(out.groupby(["panel", "seed", "stage_key"]).size().max() <= 30),
        )
        .encode(
            x=alt.X("step:Q", title="optimizer step along the chain"),
            y=alt.Y(
                "loss:Q",
                title="training loss",
                scale=alt.Scale(zero=False),
                axis=alt.Axis(format=AXIS_FORMAT),
            ),
            color=alt.Color("stage:N", scale=stage_scale(out["stage"]), title="stage"),
            detail=[alt.Detail("seed:N"), alt.Detail("stage_key:N")],
            tooltip=["panel", "seed", "checkpoint", "stage_step", "step", "loss"],
        )
        .properties(width=260, height=150)
        .facet(facet=alt.Facet("panel:N", title=None), columns=3)
        .resolve_scale(x="independent", y="independent")
        .properties(title=title)
    )
    return chart, out, title
