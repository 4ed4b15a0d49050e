"""What every figure builder shares: the tables and checkpoint frame it draws from (``Ctx``),
the exception that skips a figure whose inputs are missing, and the chain a per-stage figure
follows."""

from __future__ import annotations

from dataclasses import dataclass

import altair as alt
import pandas as pd

from repcollapse.analyze.stats.regression import StatsConfig
from repcollapse.analyze.tables.read import Tables
from repcollapse.store_schema.lineage import CONTROL_SEQUENCE, NO_MITIGATION

Built = tuple[alt.TopLevelMixin, pd.DataFrame, str]
"""A builder's result: the chart, exactly the data it drew, and its title."""


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


def chain(ctx: Ctx) -> pd.DataFrame:
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


def stage_key(df: pd.DataFrame) -> pd.Series:
    return df["stage_index"].astype(str) + " " + df["stage"]
