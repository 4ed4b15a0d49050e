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
from pathlib import Path

from repcollapse.analyze.report.fig_lora import fig_lora_overlap
from repcollapse.analyze.report.fig_loss import fig_loss_curves
from repcollapse.analyze.report.fig_objectives import fig_objectives
from repcollapse.analyze.report.fig_profiles import fig_layerwise, fig_span_rank
from repcollapse.analyze.report.fig_tradeoffs import fig_collapse_future, fig_pareto
from repcollapse.analyze.report.figure_context import Built, Ctx, SkipFigure, choose_sequence
from repcollapse.analyze.report.style import FiguresConfig
from repcollapse.analyze.stats.regression import StatsConfig, checkpoint_frame
from repcollapse.analyze.tables.read import (
    FIGURES_INPUTS,
    read_tables,
    write_inputs,
)

__all__ = ["BUILDERS", "Ctx", "SkipFigure", "choose_sequence", "make_figures"]

BUILDERS: dict[str, Callable[[Ctx], Built]] = {
    "layerwise": fig_layerwise,
    "objectives": fig_objectives,
    "collapse_future": fig_collapse_future,
    "lora_overlap": fig_lora_overlap,
    "pareto": fig_pareto,
    "span_rank": fig_span_rank,
    "loss_curves": fig_loss_curves,
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
    cfg = cfg or StatsConfig()
    tables = read_tables(tables_dir, cfg.convention.option_set or None)
    if tables.checkpoints is None:
        raise FileNotFoundError(f"checkpoints.parquet is missing from {str(tables.root)!r}")
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
    write_inputs(tables, out / FIGURES_INPUTS)  # what the report checks them against
    return pngs
