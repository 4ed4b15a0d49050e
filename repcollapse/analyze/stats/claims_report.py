"""The claims and the stage table as HTML sections for the report (self-contained markup; the
report's CSS classes pass / fail / notrun colour the verdicts)."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from repcollapse.analyze.stats.claims import NOT_REPRODUCED, REPRODUCED
from repcollapse.analyze.stats.stage_table import formatted

HEAD = ("claim", "effect", "95% CI over seeds", "MDE", "δ", "seeds", "verdict", "detail")


def _num(x: float) -> str:
    if not np.isfinite(x):
        return "–"
    return f"{x:.3g}" if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3) else f"{x:.3f}"


def claims_html(claims: pd.DataFrame) -> str:
    """One row per claim; the verdict coloured, the rule named once below the table."""
    if claims is None or claims.empty:
        return '<p class="note">No claims evaluated.</p>'
    rows = []
    for r in claims.itertuples(index=False):
        cls = {REPRODUCED: "pass", NOT_REPRODUCED: "fail"}.get(r.verdict, "notrun")
        ci = f"[{_num(r.ci_low)}, {_num(r.ci_high)}]" if np.isfinite(r.ci_low) else "–"
        cells = [r.claim, _num(r.effect), ci, _num(r.mde), _num(r.delta), str(r.n_seeds)]
        tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        rows.append(
            f'<tr>{tds}<td class="{cls}">{html.escape(r.verdict)}</td>'
            f"<td>{html.escape(str(r.detail))}</td></tr>"
        )
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEAD)
    return (
        f"<table><tr>{head}</tr>{''.join(rows)}</table>"
        '<p class="note">Verdicts by the rule in docs/claims.md: not reproduced when the '
        "interval over seeds excludes every effect of size δ (half the paper's) in the "
        "predicted direction; reproduced when it excludes zero on that side (and so reaches "
        "δ); inconclusive (underpowered) otherwise or without an interval. MDE: the effect "
        "detected with 80% power at these seeds and items."
        "</p>"
    )


def stage_table_html(stage_table: pd.DataFrame) -> str:
    """The stage table as the paper prints it, each cell 'mean [low, high]' over seeds."""
    if stage_table is None or stage_table.empty:
        return '<p class="note">No checkpoints for a stage table.</p>'
    return formatted(stage_table).to_html(index=False, border=0, escape=True) + (
        '<p class="note">Means over seeds with 95% t intervals over seeds (none with one seed); '
        "CKA is linear CKA to the base model.</p>"
    )


def report_sections(stats: dict[str, pd.DataFrame]) -> list[tuple[str, str]]:
    """(title, HTML) pairs for the report, from ``run_stats``'s output."""
    return [
        ("Claims of the paper: verdicts", claims_html(stats.get("claims"))),
        ("Stage table with intervals over seeds", stage_table_html(stats.get("stage_table"))),
    ]


def claims_lines(claims: pd.DataFrame) -> list[str]:
    """One plain line per claim for a terminal (the CLI's summary after `analyze stats`)."""
    out = []
    for r in claims.itertuples(index=False):
        ci = f"[{_num(r.ci_low)}, {_num(r.ci_high)}]" if np.isfinite(r.ci_low) else "no CI"
        out.append(
            f"{r.claim}: {r.verdict} (effect {_num(r.effect)} {ci}, MDE {_num(r.mde)}, "
            f"delta {_num(r.delta)}, {r.n_seeds} seed(s))"
        )
    return out
