"""One self-contained HTML report: stage table, figures, statistics, falsification, provenance.

The page carries everything inline (CSS, PNGs as base64 data URIs), so it can be mailed or
archived beside the tables and still open offline years later.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from markupsafe import Markup

from repcollapse.analyze.report import template
from repcollapse.analyze.report.behavior_view import behavior_table_html
from repcollapse.analyze.report.figures import make_figures
from repcollapse.analyze.report.numbers import format_value
from repcollapse.analyze.report.stage_view import TABLE4, compute, stage_table, stage_table_html
from repcollapse.analyze.report.summary import regression_warnings, summary
from repcollapse.analyze.stats.claims_report import report_sections
from repcollapse.analyze.stats.regression import StatsConfig, run_stats
from repcollapse.analyze.tables.read import (
    FIGURES_INPUTS,
    read_tables,
    sinks_excluded,
    stale_inputs,
    stale_stats,
)

__all__ = ["TABLE4", "build_report", "format_value", "read_stats", "stage_table"]
PROVENANCE_KEYS: tuple[str, ...] = (
    "model_id",
    "model_family",
    "store_id",
    "probe_hash",
    "schema_version",
    "code_version",
    "tokenizer",
    "created_at",
)
SOURCE_KEYS: tuple[str, ...] = ("domain", "source", "license", "n_records")
BEHAVIOR_NOTE = (
    '<p class="note">Each behavioural number of each checkpoint with its standard error over '
    "items and n, the items behind it (in the header where every checkpoint has the same n): "
    "scores binomial, teacher-forced NLLs a ratio estimator over items, ECE and steps-to-NLL "
    "bootstrapped over items (docs/INTERFACES.md, behavior.json). A score's plug-in SE is 0 "
    "at 0 or 1: read it with n. '–': not measured; a value without ± comes from an evaluation "
    "that recorded no SE.</p>"
)


def _table(df: pd.DataFrame | None, max_rows: int | None = None) -> Markup:
    """A frame as an HTML table, every number by ``format_value``; text columns left-aligned,
    headers breakable at underscores (long column names otherwise push the table off the page)."""
    if df is None or df.empty:
        return Markup('<p class="note">No rows.</p>')
    shown = df if max_rows is None else df.head(max_rows)
    head = [
        dict(
            name=str(c).replace("_", "_\u200b"),
            text=not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])),
        )
        for c in df.columns
    ]
    rows = [[format_value(v) for v in r] for r in shown.itertuples(index=False)]
    more = len(df) if max_rows is not None and len(df) > max_rows else 0
    return Markup(template.render(template.TABLE, head=head, rows=rows, more=more))


def _falsification_html(df: pd.DataFrame) -> Markup:
    rows = [
        dict(
            check=r.check,
            metric=r.metric,
            statistic=format_value(r.statistic),
            threshold=format_value(r.threshold),
            result=r.result,
            cls="pass" if r.result == "pass" else "fail" if r.result == "fail" else "notrun",
            detail=r.detail,
        )
        for r in df.itertuples(index=False)
    ]
    head = ("check", "metric", "statistic", "threshold", "result", "detail")
    return Markup(template.render(template.FALSIFICATION, rows=rows, head=head))


def _provenance_html(tables_dir: Path, option_set: str | None = None) -> Markup:
    """Model, probe and code versions per store, the probe corpus's sources and licenses as
    extract recorded them, and whether attention sinks were excluded."""
    tables = read_tables(tables_dir, option_set)
    provenance = [
        dict(
            rows=[(k, str(prov.get(k, "–"))) for k in PROVENANCE_KEYS],
            sources=[
                [str(r.get(k, "–")) for k in SOURCE_KEYS] for r in prov.get("probe_sources") or []
            ],
        )
        for prov in tables.provenance
    ]
    return Markup(
        template.render(
            template.PROVENANCE,
            provenance=provenance,
            source_keys=SOURCE_KEYS,
            sinks=sinks_excluded(tables),
        )
    )


def _figures_html(fig_dir: Path) -> Markup:
    figures = []
    for f in json.loads((fig_dir / "figures.json").read_text()):
        if not f.get("skipped"):
            f = dict(f, data=base64.b64encode((fig_dir / f["png"]).read_bytes()).decode("ascii"))
        figures.append({"skipped": None, **f})
    return Markup(template.render(template.FIGURES, figures=figures))


STATS_TABLES: tuple[str, ...] = (
    "regression",
    "stage_effects",
    "order_effects",
    "pareto",
    "falsification",
)
"""What ``analyze stats`` writes beside the tables (with ``stats_notes.json``) and the report shows."""


class MissingReportInputs(FileNotFoundError):
    """The statistics or figures the report shows were not given (a usage error: exit 2)."""

    exit_code = 2


@dataclass(frozen=True)
class ReportConfig:
    """Where the report's inputs come from."""

    compute_missing: bool = field(
        default=False,
        metadata={
            "help": "compute the statistics and figures not found (as 'analyze stats' and "
            "'analyze figures' would) instead of refusing"
        },
    )


OPTIONAL_STATS: tuple[str, ...] = ("claims", "stage_table")
"""Stats tables read when present: folders written before they existed still make a report."""


def read_stats(tables_dir: str | Path) -> dict[str, pd.DataFrame] | None:
    """The statistics ``run_stats`` wrote in ``tables_dir`` (tables plus a ``notes`` frame), or
    None when any of STATS_TABLES is absent; OPTIONAL_STATS are added when present."""
    root = Path(tables_dir)
    paths = [root / f"{name}.parquet" for name in STATS_TABLES] + [root / "stats_notes.json"]
    if not all(p.exists() for p in paths):
        return None
    out = {name: pd.read_parquet(root / f"{name}.parquet") for name in STATS_TABLES}
    for name in OPTIONAL_STATS:
        if (root / f"{name}.parquet").exists():
            out[name] = pd.read_parquet(root / f"{name}.parquet")
    notes = json.loads((root / "stats_notes.json").read_text())
    out["notes"] = pd.DataFrame(
        [(s, t) for s, ts in notes.items() for t in ts], columns=["section", "note"]
    )
    return out


def _inputs(
    tables_dir: Path,
    out_html: Path,
    cfg: StatsConfig,
    figures_dir: Path | None,
    report: ReportConfig,
) -> tuple[dict[str, pd.DataFrame], Path, list[str]]:
    """The statistics and the figures directory the report shows, and where each came from."""
    said = []
    stats = read_stats(tables_dir)
    stale = stale_stats(tables_dir, cfg.convention.option_set or None) if stats else None
    if stale and report.compute_missing:
        stats = run_stats(tables_dir, cfg)
        said.append(f"Statistics recomputed for this report: {stale}.")
    elif stale:
        raise MissingReportInputs(
            f"{stale}: run 'repcollapse analyze stats' again, or pass --compute-missing"
        )
    elif stats is not None:
        said.append(f"Statistics read from {tables_dir} (written by 'analyze stats').")
    elif report.compute_missing:
        stats = run_stats(tables_dir, cfg)
        said.append("Statistics computed for this report (none were found in the tables).")
    else:
        raise MissingReportInputs(
            f"{str(tables_dir)!r} holds no statistics (expected {', '.join(STATS_TABLES)} "
            "parquet and stats_notes.json): run 'repcollapse analyze stats' first, or pass "
            "--compute-missing"
        )
    fig_dir = figures_dir or out_html.parent / "figures"
    opt = cfg.convention.option_set or None
    stale = (
        stale_inputs(fig_dir / FIGURES_INPUTS, tables_dir, opt, "figures")
        if (fig_dir / "figures.json").exists()
        else None
    )
    if stale and report.compute_missing:
        make_figures(tables_dir, fig_dir, cfg)
        said.append(f"Figures redrawn for this report into {fig_dir}: {stale}.")
    elif stale:
        raise MissingReportInputs(
            f"{stale}: run 'repcollapse analyze figures' again, or pass --compute-missing"
        )
    elif (fig_dir / "figures.json").exists():
        said.append(f"Figures read from {fig_dir} (written by 'analyze figures').")
    elif report.compute_missing:
        make_figures(tables_dir, fig_dir, cfg)
        said.append(f"Figures drawn for this report into {fig_dir} (none were given).")
    else:
        raise MissingReportInputs(
            f"{str(fig_dir)!r} holds no figures.json: pass --figures DIR written by "
            "'repcollapse analyze figures', or --compute-missing"
        )
    return stats, fig_dir, said


def build_report(
    tables_dir: str | Path,
    out_html: str | Path,
    cfg: StatsConfig | None = None,
    figures_dir: str | Path | None = None,
    report: ReportConfig | None = None,
) -> Path:
    """Write one HTML page from ``tables_dir``, the statistics ``analyze stats`` wrote there and
    the figures in ``figures_dir`` (default: the ``figures`` directory beside the page, where
    the demo and a study write them).

    The statistics and figures are read, not re-run: absent ones raise MissingReportInputs
    unless ``report.compute_missing``, which computes them (with ``cfg``) and says so in the
    page. ``cfg`` also sets the layer convention of the stage table.
    """
    cfg = cfg or StatsConfig()
    report = report or ReportConfig()
    tables_dir, out_html = Path(tables_dir), Path(out_html)
    ck = read_tables(tables_dir, cfg.convention.option_set or None).checkpoints
    if ck is None:
        raise FileNotFoundError(f"checkpoints.parquet is missing from {str(tables_dir)!r}")
    out_html.parent.mkdir(parents=True, exist_ok=True)
    stats, fig_dir, said = _inputs(
        tables_dir, out_html, cfg, Path(figures_dir) if figures_dir else None, report
    )
    opt = cfg.convention.option_set or None
    st = stats.get("stage_table")
    if st is None:  # tables written before analyze stats wrote stage_table.parquet
        st = compute(tables_dir, cfg.convention)
        said.append("Stage table computed for this report (no stage_table.parquet).")
    effects = stats["stage_effects"]
    pooled = effects[effects["model_family"] == "all"] if not effects.empty else effects
    pooled = pooled.drop(columns=["model_family", "sequence", "stage_index"], errors="ignore")
    notes = stats["notes"]
    reg = stats["regression"]
    model = ", ".join(sorted(set(reg["model"]))) if not reg.empty else "none fitted"
    reg_warn = regression_warnings(notes)
    if reg.empty and not reg_warn:
        reg_warn = ["No regression was fitted (see the notes below for why)."]
    claims = [
        dict(title=t, body=Markup(h), warnings=[])
        for t, h in report_sections(stats)
        if "claims" in stats and not t.lower().startswith("stage table")
    ]

    def sec(title: str, body: Markup, warnings: list[str] | None = None) -> dict:
        # ``body`` must be Markup: a plain str joined to Markup is escaped, not rendered.
        if not isinstance(body, Markup):
            raise TypeError(f"report section {title!r}: body must be Markup, found {type(body)}")
        return dict(title=title, body=body, warnings=warnings or [])

    sections = [
        sec(
            "Stage table (the paper's Table 4)",
            Markup(
                '<p class="note">{} Anisotropy is centred; CKA is linear CKA to the base model; '
                "scores are in [0, 1]. Each cell is the mean over seeds with its 95% t interval "
                "over seeds beneath (none with one seed); mitigated chains are marked "
                "[mitigation]. A row of one seed has no interval over seeds: its target and "
                "future scores show the checkpoint's standard error over items instead "
                "(value ± SE, n items beneath).</p>"
            ).format(cfg.convention.describe())
            + Markup(stage_table_html(st, ck)),
        ),
        *claims,  # right after the stage table they read from
        sec(
            "Behaviour per checkpoint (value ± standard error)",
            Markup(BEHAVIOR_NOTE) + Markup(behavior_table_html(ck)),
        ),
        sec("Figures", _figures_html(fig_dir)),
        sec(
            "Does collapse predict future learning? (regression)",
            Markup(
                "<p>Model: <b>{}</b>. Response: {}; predictors standardised (estimate per one "
                "standard deviation; <code>scale</code> is that SD).</p>"
            ).format(model, cfg.response)
            + _table(reg),
            reg_warn,
        ),
        sec(
            "Stage effects vs the matched-token general-SFT control",
            Markup(
                '<p class="note">Pooled over families and sequences per objective; per-family '
                "rows in stage_effects.parquet.</p>"
            )
            + _table(pooled)
            + Markup("<details><summary>All rows</summary>")
            + _table(effects, 400)
            + Markup("</details>"),
        ),
        sec("Order dependence (math then code vs code then math)", _table(stats["order_effects"])),
        sec("Mitigation Pareto frontier", _table(stats["pareto"], 200)),
        sec("Falsification checks", _falsification_html(stats["falsification"])),
        sec(
            "Notes",
            Markup("<ul>")
            + Markup("").join(
                Markup("<li><b>{}</b>: {}</li>").format(s, n)
                for s, n in notes.itertuples(index=False)
            )
            + Markup("</ul>")
            + Markup("").join(Markup('<p class="note">{}</p>').format(x) for x in said),
        ),
        sec("Provenance", _provenance_html(tables_dir, opt)),
    ]
    page = template.render(
        template.PAGE,
        css=Markup(template.CSS),
        tables_dir=str(tables_dir),
        summary=summary(stats),
        sections=sections,
    )
    out_html.write_text(page, encoding="utf-8")
    return out_html
