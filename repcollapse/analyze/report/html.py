"""One self-contained HTML report: stage table, figures, statistics, falsification, provenance.

The page carries everything inline (CSS, PNGs as base64 data URIs), so it can be mailed or
archived beside the tables and still open offline years later.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from repcollapse.analyze.report.figures import make_figures
from repcollapse.analyze.stats.regression import StatsConfig, run_stats
from repcollapse.analyze.tables.read import (
    FIGURES_INPUTS,
    LayerConvention,
    checkpoint_table,
    read_tables,
    sinks_excluded,
    stale_inputs,
    stale_stats,
)
from repcollapse.store_schema.lineage import NO_MITIGATION

TABLE4: dict[str, str] = {
    "target_score": "Target score",
    "erank_norm": "Eff. rank",
    "aniso_centered": "Anisotropy",
    "cka_base": "CKA to base",
    "entropy": "Logit entropy",
    "lora_overlap_prev": "LoRA overlap",
    "future_score": "Future score",
}
"""Table 4 of the paper, column by column (after 'Checkpoint')."""
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
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}.notrun{color:#777}
.note{color:#555;font-size:.9em}figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}
"""


def format_value(x: object) -> str:
    """How every number appears in the report (and in tests that look for it)."""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        if not np.isfinite(x):
            return "–"
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
            return f"{x:.3g}"
        return f"{x:.3f}"
    return str(x)


def stage_table(
    tables_dir: str | Path,
    sequence: str | None = None,
    convention: LayerConvention | None = None,
) -> pd.DataFrame:
    """The paper's Table 4 for every plain chain (or one ``sequence``), seeds averaged.

    One row per base model and per stage (mitigation 'none'); a stage run with several seeds is
    one row of means, labelled with the number of seeds. CKA to base is 1 - drift_base where
    only the drift is in the tables.
    """
    conv = convention or LayerConvention()
    tables = read_tables(tables_dir, conv.option_set or None)
    names = [
        "erank_norm",
        "aniso_centered",
        "cka_base",
        "drift_base",
        "entropy",
        "lora_overlap_prev",
    ]
    ck = checkpoint_table(tables, names, conv)
    ck["cka_base"] = ck["cka_base"].fillna(1.0 - ck["drift_base"])
    keep = (ck["stage_index"] == 0) | (ck["mitigation"] == NO_MITIGATION)
    if sequence is not None:
        keep &= (ck["stage_index"] == 0) | (ck["sequence"] == sequence)
    ck = ck[keep].assign(sequence=lambda d: d["sequence"].where(d["stage_index"] > 0, ""))
    key = ["model_family", "sequence", "stage_index", "stage"]
    agg = ck.groupby(key, as_index=False).agg(
        n_seeds=("seed", "nunique"),
        first=("checkpoint", "first"),
        **{c: (c, "mean") for c in TABLE4},
    )
    label = agg["sequence"] + "/" + agg["stage_index"].map("{:02d}".format) + "-" + agg["stage"]
    agg["Checkpoint"] = np.where(
        agg["n_seeds"] > 1, label + " (" + agg["n_seeds"].astype(str) + " seeds)", agg["first"]
    )
    agg = agg.sort_values(key[:3]).rename(columns={**TABLE4, "model_family": "Model family"})
    cols = ["Checkpoint", *TABLE4.values()]
    if agg["Model family"].nunique() > 1:
        cols.insert(0, "Model family")
    return agg[cols].reset_index(drop=True)


def _table(df: pd.DataFrame, max_rows: int | None = None) -> str:
    if df is None or df.empty:
        return '<p class="note">No rows.</p>'
    shown = df if max_rows is None else df.head(max_rows)
    body = shown.map(format_value) if hasattr(shown, "map") else shown.applymap(format_value)
    out = body.to_html(index=False, border=0, escape=True)
    if max_rows is not None and len(df) > max_rows:
        out += f'<p class="note">First {max_rows} of {len(df)} rows; all rows in the Parquet table.</p>'
    return out


def _falsification_html(df: pd.DataFrame) -> str:
    if df.empty:
        return '<p class="note">No checks ran.</p>'
    rows = []
    for r in df.itertuples(index=False):
        cls = "pass" if r.result == "pass" else "fail" if r.result == "fail" else "notrun"
        cells = [r.check, r.metric, format_value(r.statistic), format_value(r.threshold)]
        tds = "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
        rows.append(
            f'<tr>{tds}<td class="{cls}">{html.escape(r.result)}</td>'
            f"<td>{html.escape(r.detail)}</td></tr>"
        )
    head = "".join(
        f"<th>{h}</th>" for h in ("check", "metric", "statistic", "threshold", "result", "detail")
    )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _sources_html(prov: dict) -> str:
    """The probe corpus's sources and licenses, as extract recorded them in the store."""
    rows = prov.get("probe_sources")
    if not rows:
        return (
            '<p class="note">The probe corpus\'s sources and licenses are not recorded '
            "(a store extracted before they were).</p>"
        )
    cells = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(str(r.get(k, '–')))}</td>" for k in SOURCE_KEYS)
        + "</tr>"
        for r in rows
    )
    head = "".join(f"<th>{html.escape(k)}</th>" for k in SOURCE_KEYS)
    return f"<p>Probe corpus by source and license:</p><table><tr>{head}</tr>{cells}</table>"


def _provenance_html(tables_dir: Path, option_set: str | None = None) -> str:
    tables = read_tables(tables_dir, option_set)
    parts = []
    if not tables.provenance:
        parts.append(
            '<p class="note">provenance.json missing: model, probe and code versions unknown.</p>'
        )
    for prov in tables.provenance:
        items = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(prov.get(k, '–')))}</td></tr>"
            for k in PROVENANCE_KEYS
        )
        parts.append(f"<table>{items}</table>")
        parts.append(_sources_html(prov))
    excl = sinks_excluded(tables)
    if excl is True:
        parts.append(
            "<p>Attention-sink tokens were excluded from every metric "
            "(<code>sinks_excluded</code> is true in every row).</p>"
        )
    elif excl is False:
        parts.append(
            "<p><b>Attention-sink tokens were NOT excluded</b> from some metrics "
            "(<code>sinks_excluded</code> false): covariance metrics may be dominated "
            "by them.</p>"
        )
    else:
        parts.append(
            '<p class="note">Whether attention-sink tokens were excluded is not recorded.</p>'
        )
    return "".join(parts)


def _figures_html(fig_dir: Path) -> str:
    manifest = json.loads((fig_dir / "figures.json").read_text())
    parts = []
    for f in manifest:
        if f.get("skipped"):
            parts.append(f'<p class="note">{html.escape(f["skipped"])}</p>')
            continue
        data = base64.b64encode((fig_dir / f["png"]).read_bytes()).decode("ascii")
        parts.append(
            f'<figure><img alt="{html.escape(f["name"])}" '
            f'src="data:image/png;base64,{data}"><figcaption>'
            f"{html.escape(f['title'])}</figcaption></figure>"
        )
    return "".join(parts)


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


def read_stats(tables_dir: str | Path) -> dict[str, pd.DataFrame] | None:
    """The statistics ``run_stats`` wrote in ``tables_dir`` (tables plus a ``notes`` frame), or
    None when any of them is absent."""
    root = Path(tables_dir)
    paths = [root / f"{name}.parquet" for name in STATS_TABLES] + [root / "stats_notes.json"]
    if not all(p.exists() for p in paths):
        return None
    out = {name: pd.read_parquet(root / f"{name}.parquet") for name in STATS_TABLES}
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
    if read_tables(tables_dir, cfg.convention.option_set or None).checkpoints is None:
        raise FileNotFoundError(f"checkpoints.parquet is missing from {str(tables_dir)!r}")
    out_html.parent.mkdir(parents=True, exist_ok=True)
    stats, fig_dir, said = _inputs(
        tables_dir, out_html, cfg, Path(figures_dir) if figures_dir else None, report
    )
    st = stage_table(tables_dir, convention=cfg.convention)
    effects = stats["stage_effects"]
    pooled = effects[effects["model_family"] == "all"] if not effects.empty else effects
    pooled = pooled.drop(columns=["model_family", "sequence", "stage_index"], errors="ignore")
    notes = stats["notes"]
    notes_html = "".join(
        f"<li><b>{html.escape(s)}</b>: {html.escape(n)}</li>"
        for s, n in notes.itertuples(index=False)
    )
    reg = stats["regression"]
    model = ", ".join(sorted(set(reg["model"]))) if not reg.empty else "none"
    sections = [
        (
            "Stage table (the paper's Table 4)",
            f'<p class="note">{html.escape(cfg.convention.describe())} Anisotropy is centred; '
            "CKA is linear CKA to the base model; scores are in [0, 1].</p>" + _table(st),
        ),
        ("Figures", _figures_html(fig_dir)),
        (
            "Does collapse predict future learning? (regression)",
            f"<p>Model: <b>{html.escape(model)}</b>. Response: {cfg.response}; predictors "
            "standardised (estimate per one standard deviation; <code>scale</code> is that SD).</p>"
            + _table(reg),
        ),
        (
            "Stage effects vs the matched-token general-SFT control",
            '<p class="note">Pooled over families and sequences per objective; per-family rows '
            "in stage_effects.parquet.</p>"
            + _table(pooled)
            + "<details><summary>All rows</summary>"
            + _table(effects, 400)
            + "</details>",
        ),
        ("Order dependence (math then code vs code then math)", _table(stats["order_effects"])),
        ("Mitigation Pareto frontier", _table(stats["pareto"], 200)),
        ("Falsification checks", _falsification_html(stats["falsification"])),
        (
            "Notes",
            f"<ul>{notes_html}</ul>"
            + "".join(f'<p class="note">{html.escape(x)}</p>' for x in said),
        ),
        ("Provenance", _provenance_html(tables_dir, cfg.convention.option_set or None)),
    ]
    body = "".join(f"<h2>{html.escape(t)}</h2>{c}" for t, c in sections)
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>Representation collapse report</title>"
        f"<style>{CSS}</style></head><body><h1>Representation collapse across sequential "
        f'post-training</h1><p class="note">Tables: {html.escape(str(tables_dir))}</p>'
        f"{body}</body></html>"
    )
    out_html.write_text(page, encoding="utf-8")
    return out_html
