"""The report shows every behavioural number with its standard error and n (behavior.json's
``<key>_se`` and ``<key>_n``, carried by checkpoints.parquet), not the point estimate alone."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repcollapse.analyze.report.behavior_view import checkpoint_labels, ordered
from repcollapse.analyze.report.html import ReportConfig, build_report
from repcollapse.analyze.report.numbers import sig, with_se
from repcollapse.analyze.tables.read import read_tables
from repcollapse.analyze.tables.synthetic import SyntheticTablesSpec, make_synthetic_tables


def test_with_se_prints_value_se_and_n() -> None:
    assert with_se(0.875, 0.1169, 8) == "0.875 ± 0.12 (n=8)"
    assert with_se(0.875, 0.1169) == "0.875 ± 0.12"
    assert with_se(0.875, np.nan, 8) == "0.875 (n=8)"  # an evaluation without an SE
    assert with_se(np.nan, 0.1, 8) == "–"


def _tables_with_se(root: Path, seeds: tuple[int, ...]) -> pd.DataFrame:
    """Synthetic tables whose checkpoints carry known SEs and n: target and future scores with
    one n everywhere, the target NLL with an n per checkpoint."""
    spec = SyntheticTablesSpec(families=("smollm2",), seeds=seeds, mitigations=(), noop=False)
    make_synthetic_tables(root, spec)
    ck = pd.read_parquet(root / "checkpoints.parquet")
    k = np.arange(len(ck))
    ck["target_score_se"], ck["target_score_n"] = 0.0311 + 0.001 * k, 8.0
    ck["future_score_se"], ck["future_score_n"] = 0.0917, 24.0
    ck["target_nll"], ck["target_nll_se"], ck["target_nll_n"] = 1.5 + 0.01 * k, 0.0423, 10.0 + k
    ck.to_parquet(root / "checkpoints.parquet", index=False)
    return read_tables(root).checkpoints


def _page(root: Path) -> str:
    out = build_report(
        root, root / "rep" / "report.html", report=ReportConfig(compute_missing=True)
    )
    return out.read_text(encoding="utf-8").replace("\n", "")


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, str]:
    root = tmp_path_factory.mktemp("one_seed")
    ck = _tables_with_se(root, (0,))
    return ck, _page(root)


def test_behaviour_table_shows_each_number_with_its_se(one_seed: tuple[pd.DataFrame, str]) -> None:
    ck, page = one_seed
    section = page[page.index(">Behaviour per checkpoint (value ± standard error)</h2>") :]
    section = section[: section.index("</table>")]
    # n the same for every checkpoint: said once, in the header
    assert "<th>Target score (n=8)</th>" in section
    assert "<th>Future score (n=24)</th>" in section
    assert "<th>Target NLL</th>" in section  # its n varies: beneath each cell instead
    d = ordered(ck)
    labels = checkpoint_labels(d)
    for i, r in d.iterrows():
        row = f'<td class="label">{html.escape(labels[i])}</td><td class="label">{r["seed"]}</td>'
        row += f"<td>{sig(r['target_score'])} ± {sig(r['target_score_se'], 2)}</td>"
        assert row in section, row
        nll = f"<td>{sig(r['target_nll'])} ± 0.042"
        nll += f'<span class="ci">(n={int(r["target_nll_n"])})</span></td>'
        assert nll in section, nll
        assert f"<td>{sig(r['future_score'])} ± 0.092</td>" in section
    # measures recorded without an SE (the synthetic retention) print the value alone
    assert f"<td>{sig(d['retention'].iloc[1])}</td>" in section


def test_one_seed_stage_table_cells_carry_the_items_se(one_seed: tuple[pd.DataFrame, str]) -> None:
    ck, page = one_seed
    table = page[page.index("Stage table (the paper") :]
    table = table[: table.index("</table>")]
    for _, r in ck.iterrows():
        cell = f"<td>{sig(r['target_score'])} ± {sig(r['target_score_se'], 2)}"
        assert cell + '<span class="ci">(n=8)</span></td>' in table, cell
        assert f"<td>{sig(r['future_score'])} ± 0.092" in table


def test_seeds_keep_the_t_interval_over_seeds(tmp_path: Path) -> None:
    """With two seeds a stage cell is the mean over seeds with its t interval, as before; the
    per-checkpoint SEs are in the behaviour table, not mixed into the mean's interval."""
    _tables_with_se(tmp_path, (0, 1))
    page = _page(tmp_path)
    st = pd.read_parquet(tmp_path / "stage_table.parquet")
    table = page[page.index("Stage table (the paper") :]
    table = table[: table.index("</table>")]
    for _, r in st[st["n_seeds"] == 2].iterrows():
        lo, hi = r["target_score_ci_low"], r["target_score_ci_high"]
        cell = f'<td>{sig(r["target_score"])}<span class="ci">[{sig(lo)}, {sig(hi)}]</span></td>'
        assert cell in table, cell
    assert page.count(" ± 0.092") >= (st["n_seeds"] == 2).sum() * 2  # the behaviour table's
