"""The committed study results (docs/results/<name>/) are complete and agree with their STUDY.toml.

A published result must not rot silently when the table format changes: this opens the
committed tables with today's readers and checks every cell of the study is there (every family,
sequence, seed and stage), every checkpoint has its metrics and behaviour, every claim has a
verdict by the documented rule, and the README's verdicts are the table's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repcollapse.analyze.stats.claims import DELTAS, INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from repcollapse.analyze.stats.claims import verdict as rule_verdict
from repcollapse.analyze.tables.read import read_tables
from repcollapse.study import load_study
from repcollapse.study.merge import canonical_store_id
from repcollapse.train.config_load import load_config

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
PUBLISHED = sorted(p for p in RESULTS.glob("*") if (p / "STUDY.toml").is_file())
CORE_METRICS = ("erank_norm", "aniso_centered", "cka_base", "entropy", "collapse_index")


def test_the_cpu_study_is_published() -> None:
    # the whole studies/cpu-small.toml preset: both families, every cell (checked below)
    assert RESULTS / "cpu-small" in PUBLISHED
    study = load_study(RESULTS / "cpu-small" / "STUDY.toml")
    assert len(study.families) == 2 and len(study.seeds) >= 3
    assert {"A", "control", "D"} <= set(study.sequences)


def _expected(root: Path) -> pd.DataFrame:
    """(store_id, sequence, seed, stage_index) of every checkpoint the study's plan makes."""
    study = load_study(root / "STUDY.toml")
    rows = []
    for fam in study.families:
        sid = canonical_store_id(study.name, fam.label)
        rows.append((sid, "", -1, 0))  # the base, once per family
        for config in study.configs():
            cfg = load_config(config)
            for seed in study.seeds:
                for k in range(1, len(cfg.expanded_stages()) + 1):
                    rows.append((sid, cfg.sequence, seed, k))
    return pd.DataFrame(rows, columns=["store_id", "sequence", "seed", "stage_index"])


@pytest.mark.parametrize("root", PUBLISHED, ids=[p.name for p in PUBLISHED])
def test_every_cell_checkpoint_metric_and_claim_is_there(root: Path) -> None:
    tables = read_tables(root / "tables")
    ck = tables.checkpoints
    assert ck is not None and tables.metrics is not None
    got = ck.assign(seed=np.where(ck["stage_index"] == 0, -1, ck["seed"]))
    got = got.assign(sequence=np.where(ck["stage_index"] == 0, "", ck["sequence"]))
    key = ["store_id", "sequence", "seed", "stage_index"]
    exp = _expected(root)
    merged = exp.merge(got[key].drop_duplicates(), on=key, how="outer", indicator=True)
    missing = merged[merged["_merge"] == "left_only"]
    extra = merged[merged["_merge"] == "right_only"]
    assert missing.empty, f"checkpoints of the study absent from the tables:\n{missing}"
    assert extra.empty, f"checkpoints in the tables that the study does not plan:\n{extra}"
    # behaviour: every trained checkpoint was evaluated, with its standard error
    trained = ck[ck["stage_index"] > 0]
    for col in ("target_score", "future_score", "val_loss"):
        assert trained[col].notna().all(), col
    # the core metrics for every checkpoint, at the same layers everywhere
    m = tables.metrics
    for name in CORE_METRICS:
        rows = m[(m["metric"] == name) & (m["domain"] == "all") & (m["span"] == "all")]
        assert set(rows["checkpoint"]) == set(ck["checkpoint"]), name
        per_ck = rows.groupby("checkpoint")["layer"].apply(frozenset)
        assert per_ck.nunique() == 1, f"{name}: layers differ between checkpoints"


@pytest.mark.parametrize("root", PUBLISHED, ids=[p.name for p in PUBLISHED])
def test_claims_follow_the_rule_and_the_readme_says_so(root: Path) -> None:
    claims = pd.read_parquet(root / "tables" / "claims.parquet")
    names = {c.split("[", 1)[0] for c in claims["claim"]}
    study = load_study(root / "STUDY.toml")
    assert names == set(DELTAS)  # every claim has a row, an untestable one says so
    assert set(claims["verdict"]) <= {REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE}
    readme = (root / "README.md").read_text(encoding="utf-8")
    for c in claims.itertuples():
        if np.isfinite(c.ci_low) and np.isfinite(c.ci_high) and c.ci_high > c.ci_low:
            # recomputed by the rule of docs/claims.md from the committed numbers
            assert rule_verdict(c.effect, c.ci_low, c.ci_high, c.direction, c.delta) == c.verdict
        else:
            assert c.verdict == INCONCLUSIVE
        assert f"| `{c.claim}` |" in readme and f"**{c.verdict}**" in readme
    st = pd.read_parquet(root / "tables" / "stage_table.parquet")
    assert (st.loc[st["stage_index"] > 0, "n_seeds"] == len(study.seeds)).all()


@pytest.mark.parametrize("root", PUBLISHED, ids=[p.name for p in PUBLISHED])
def test_small_enough_for_git_and_self_contained(root: Path) -> None:
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size <= 20 * 2**20, f"{root}: {size / 2**20:.1f} MB, over 20 MB"
    html = (root / "report.html").read_text(encoding="utf-8")
    assert "<img" in html and 'src="http' not in html  # figures inline, nothing fetched
    assert list((root / "figures").glob("*.png"))
    env = (root / "ENVIRONMENT.md").read_text(encoding="utf-8")
    assert "Wall time" in env and "| torch |" in env
