"""Stats on metric tables: regression recovers known coefficients, Pareto, effects, thin data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repcollapse.analyze.stats.pareto import pareto_mask, pareto_table
from repcollapse.analyze.stats.regression import (
    StatsConfig,
    checkpoint_frame,
    regression,
    run_stats,
)
from repcollapse.analyze.tables.read import LayerConvention, read_tables, with_parent
from repcollapse.analyze.tables.synthetic import (
    SyntheticTablesSpec,
    SyntheticTruth,
    make_synthetic_tables,
)
from repcollapse.cli.analyze_tables_cmd import main_stats
from repcollapse.store_schema.lineage import noop_mask

STATS_TABLES = ("regression", "stage_effects", "order_effects", "pareto", "falsification")


@pytest.fixture(scope="module")
def syn4(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTruth:
    return make_synthetic_tables(tmp_path_factory.mktemp("syn4"), SyntheticTablesSpec())


@pytest.fixture(scope="module")
def syn1(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTruth:
    spec = SyntheticTablesSpec(families=("smollm2",), seed=3)
    return make_synthetic_tables(tmp_path_factory.mktemp("syn1"), spec)


@pytest.fixture(scope="module")
def thin(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTruth:
    spec = SyntheticTablesSpec(families=("smollm2",), seeds=(0,), mitigations=(), noop=False)
    return make_synthetic_tables(tmp_path_factory.mktemp("thin"), spec)


@pytest.fixture(scope="module")
def stats4(syn4: SyntheticTruth) -> dict[str, pd.DataFrame]:
    return run_stats(syn4.tables_dir, write=False)


def _regress(truth: SyntheticTruth, cfg: StatsConfig) -> tuple[pd.DataFrame, dict]:
    notes: dict[str, list[str]] = {}
    ck = checkpoint_frame(read_tables(truth.tables_dir), cfg)
    return regression(ck, cfg, notes).set_index("term"), notes


def _assert_recovered(reg: pd.DataFrame, truth: SyntheticTruth) -> None:
    # Estimates are per SD of the predictor, so the true standardised slope is b * SD.
    for term, b in truth.coefficients.items():
        row = reg.loc[term]
        true = b * row["scale"]
        assert row["ci_low"] <= true <= row["ci_high"], (term, true, row.to_dict())
        assert np.sign(row["estimate"]) == np.sign(b), term


def test_mixedlm_recovers_known_coefficients(syn4: SyntheticTruth) -> None:
    # 99% intervals: the synthetic data are one fixed draw, and 8 terms at 95% would miss one
    # about a third of the time by design (coverage over seeds was checked at ~95%).
    reg, notes = _regress(syn4, StatsConfig(alpha=0.01))
    assert set(reg["model"]) == {"mixedlm"}
    ck = pd.read_parquet(syn4.tables_dir / "checkpoints.parquet")
    n_noop = int(noop_mask(ck["mitigation"]).sum())
    assert n_noop > 0 and reg["n_obs"].iloc[0] == syn4.n_checkpoints - n_noop  # no-ops left out
    _assert_recovered(reg, syn4)
    assert {"var(model_family)", "var(sequence)", "var(residual)"} <= set(reg.index)
    assert any("MixedLM" in n for n in notes["regression"])


def test_ols_fallback_recovers_known_coefficients_with_one_family(syn1: SyntheticTruth) -> None:
    reg, notes = _regress(syn1, StatsConfig(alpha=0.01))
    assert reg["model"].iloc[0].startswith("ols")
    _assert_recovered(reg, syn1)
    assert any("1 model family" in n and "OLS" in n for n in notes["regression"])


def test_two_families_is_too_few_for_a_random_effect(tmp_path: Path) -> None:
    truth = make_synthetic_tables(tmp_path, SyntheticTablesSpec(families=("a", "b"), seeds=(0,)))
    reg, notes = _regress(truth, StatsConfig())
    assert reg["model"].iloc[0].startswith("ols")
    assert any("2 model families" in n for n in notes["regression"])


def test_degenerate_random_effects_are_stated(tmp_path: Path) -> None:
    # No family or sequence effect in the generator: MixedLM often ends on the boundary or does
    # not converge, but a draw can also give small non-zero variances. Whatever it does, the
    # table says which model it is and the notes say so; over two draws a degenerate fit occurs.
    degenerate = 0
    for seed in (0, 1):
        spec = SyntheticTablesSpec(
            families=("a", "b", "c"), seeds=(0,), family_sd=0.0, sequence_sd=0.0, seed=seed
        )
        reg, notes = _regress(make_synthetic_tables(tmp_path / str(seed), spec), StatsConfig())
        model = reg["model"].iloc[0]
        text = " ".join(notes["regression"])
        if model == "mixedlm":
            var = reg["estimate"]
            at_zero = (
                min(var["var(model_family)"], var["var(sequence)"]) < 1e-6 * var["var(residual)"]
            )
            assert ("estimated at zero" in text) == at_zero, text
            degenerate += at_zero
        else:
            assert model.startswith("ols") and "MixedLM" in text and "OLS instead" in text
            degenerate += 1
    assert degenerate >= 1


def test_too_few_rows_gives_reduced_model_or_none(syn1: SyntheticTruth) -> None:
    cfg = StatsConfig()
    ck = checkpoint_frame(read_tables(syn1.tables_dir), cfg)
    stages = ck[ck["stage_index"] > 1]
    notes: dict[str, list[str]] = {}
    reg = regression(stages.head(7), cfg, notes)
    assert reg["model"].iloc[0].startswith("ols-reduced")
    assert any("reduced model" in n for n in notes["regression"])
    assert len(set(reg["term"]) & set(syn1.coefficients)) < len(syn1.coefficients)
    notes = {}
    reg = regression(stages.head(2), cfg, notes)
    assert reg.empty and list(reg.columns)[:3] == ["term", "estimate", "std_err"]
    assert any("none fitted" in n for n in notes["regression"])


def _brute_force_front(v: np.ndarray, maximize: list[bool]) -> np.ndarray:
    w = np.where(maximize, v, -v)
    ok = ~np.isnan(w).any(axis=1)
    out = np.zeros(len(w), dtype=bool)
    for i in range(len(w)):
        if not ok[i]:
            continue
        dominated = any(
            ok[j] and np.all(w[j] >= w[i]) and np.any(w[j] > w[i]) for j in range(len(w))
        )
        out[i] = not dominated
    return out


@pytest.mark.parametrize("seed", range(6))
def test_pareto_mask_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = [2, 3, 3, 4, 3, 2][seed]
    v = rng.integers(0, 6, size=(60, k)).astype(float)  # small integers: many ties and duplicates
    v[rng.random(60) < 0.05, 0] = np.nan
    maximize = list(rng.random(k) < 0.5)
    assert np.array_equal(pareto_mask(v, maximize), _brute_force_front(v, maximize))


def test_pareto_table_frontier_within_groups(syn4: SyntheticTruth) -> None:
    ck = checkpoint_frame(read_tables(syn4.tables_dir), StatsConfig())
    p = pareto_table(ck)
    assert {"on_frontier", "target_kept", "final_step"} <= set(p.columns)
    for _, g in p.groupby(["model_family", "sequence", "step"]):
        v = g[["target_score", "collapse_index", "future_score"]].to_numpy()
        assert np.array_equal(
            g["on_frontier"].to_numpy(), _brute_force_front(v, [True, False, True])
        )
    none = p[p["mitigation"] == "none"]
    assert np.allclose(none["target_kept"], 1.0)
    # every mitigation damps collapse in the generator: the unmitigated chain ends up dominated
    final_a = p[(p["sequence"] == "A") & p["final_step"]]
    assert not final_a.loc[final_a["mitigation"] == "none", "on_frontier"].any()


def test_stage_effects_are_deltas_minus_matched_control(
    syn4: SyntheticTruth, stats4: dict[str, pd.DataFrame]
) -> None:
    se = stats4["stage_effects"]
    ck = with_parent(checkpoint_frame(read_tables(syn4.tables_dir), StatsConfig()), ["erank_norm"])
    row = se[
        (se["model_family"] == "gemma3")
        & (se["sequence"] == "C")
        & (se["stage_index"] == 1)
        & (se["metric"] == "erank_norm")
    ].iloc[0]
    fam = ck[
        (ck["model_family"] == "gemma3") & (ck["stage_index"] == 1) & (ck["mitigation"] == "none")
    ]
    d = fam[fam["sequence"] == "C"].set_index("seed")["delta_erank_norm"]
    c = fam[fam["sequence"] == "control"].set_index("seed")["delta_erank_norm"]
    assert row["n_seeds"] == 3 and row["basis"] == "vs control"
    assert row["effect"] == pytest.approx((d - c).mean())
    assert row["ci_low"] <= row["effect"] <= row["ci_high"]
    # pooled: safety narrows rank more than the general control, clearly
    safety = se[
        (se["model_family"] == "all") & (se["stage"] == "safety") & (se["metric"] == "erank_norm")
    ]
    assert safety["ci_high"].iloc[0] < 0


def test_order_effects_compare_math_code_with_code_math(
    syn4: SyntheticTruth, stats4: dict[str, pd.DataFrame]
) -> None:
    oe = stats4["order_effects"]
    assert set(oe["sequences_math_code"]) == {"A"} and set(oe["sequences_code_math"]) == {"D"}
    ck = checkpoint_frame(read_tables(syn4.tables_dir), StatsConfig())
    r = oe[(oe["model_family"] == "qwen25") & (oe["metric"] == "future_score")].iloc[0]
    pick = ck[
        (ck["model_family"] == "qwen25") & (ck["stage_index"] == 3) & (ck["mitigation"] == "none")
    ]
    a = pick.loc[pick["sequence"] == "A", "future_score"].mean()
    d = pick.loc[pick["sequence"] == "D", "future_score"].mean()
    assert r["difference"] == pytest.approx(a - d)
    assert r["n_math_code"] == r["n_code_math"] == 3 and np.isfinite(r["ci_low"])


def test_falsification_passes_on_clean_data(stats4: dict[str, pd.DataFrame]) -> None:
    fz = stats4["falsification"]
    assert set(fz["result"]) == {"pass"}, fz[["check", "metric", "result", "detail"]]
    assert fz["check"].nunique() == 4


def test_falsification_noop_fails_when_the_noop_moves_the_metric(
    syn1: SyntheticTruth, tmp_path: Path
) -> None:
    for f in Path(syn1.tables_dir).iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    m = pd.read_parquet(tmp_path / "metrics.parquet")
    ck = pd.read_parquet(tmp_path / "checkpoints.parquet")
    noop = set(ck.loc[noop_mask(ck["mitigation"]), "checkpoint"])
    sel = m["checkpoint"].isin(noop) & (m["metric"] == "erank_norm")
    m.loc[sel, "value"] -= 0.05
    m.to_parquet(tmp_path / "metrics.parquet")
    fz = run_stats(tmp_path, write=False)["falsification"].set_index(["check", "metric"])
    assert fz.loc[("no-op adapter leaves metrics unmoved", "erank_norm"), "result"] == "fail"
    assert fz.loc[("no-op adapter leaves metrics unmoved", "pr_norm"), "result"] == "pass"


def test_one_seed_one_family_gives_plain_notes_not_errors(thin: SyntheticTruth) -> None:
    out = run_stats(thin.tables_dir)
    notes = json.loads((Path(thin.tables_dir) / "stats_notes.json").read_text())
    flat = " ".join(n for ns in notes.values() for n in ns)
    assert "One seed" in flat and "no random effect" in flat
    assert "random-domain replay" in flat and "not run" in flat
    se = out["stage_effects"]
    assert se.loc[se["model_family"] != "all", "ci_low"].isna().all()
    assert out["order_effects"]["ci_low"].isna().all()
    fz = out["falsification"].set_index("check")["result"]
    assert fz["no-op adapter leaves metrics unmoved"].startswith("not run")


def test_run_stats_writes_every_table_beside_metrics(syn4: SyntheticTruth) -> None:
    rc = main_stats(argparse.Namespace(tables_dir=str(syn4.tables_dir)))
    assert rc == 0
    for name in STATS_TABLES:
        df = pd.read_parquet(Path(syn4.tables_dir) / f"{name}.parquet")
        assert len(df) > 0, name
    reg = pd.read_parquet(Path(syn4.tables_dir) / "regression.parquet")
    assert list(reg.columns)[:8] == [
        "term",
        "estimate",
        "std_err",
        "ci_low",
        "ci_high",
        "p_value",
        "model",
        "n_obs",
    ]
    notes = json.loads((Path(syn4.tables_dir) / "stats_notes.json").read_text())
    assert "mean over layers" in notes["conventions"][0]


def test_layer_convention_middle_and_fixed_layer(syn1: SyntheticTruth) -> None:
    t = read_tables(syn1.tables_dir)
    mid = checkpoint_frame(t, StatsConfig(convention=LayerConvention(layer="middle")))
    l3 = checkpoint_frame(t, StatsConfig(convention=LayerConvention(layer=3)))
    assert np.allclose(mid["erank_norm"], l3["erank_norm"])  # 6 layers: middle is 3
    m = t.metrics
    one = m[
        (m["metric"] == "erank_norm")
        & (m["layer"] == 3)
        & (m["domain"] == "all")
        & (m["span"] == "all")
        & (m["checkpoint"] == "A/s0/02-math")
    ]["value"].iloc[0]
    assert l3.set_index("checkpoint").loc["A/s0/02-math", "erank_norm"] == pytest.approx(one)
    with pytest.raises(ValueError, match="expected 'mean', 'middle' or an int"):
        LayerConvention(layer="top")


def test_missing_checkpoints_table_is_a_plain_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main_stats(argparse.Namespace(tables_dir=str(tmp_path))) == 2
    out, err = capsys.readouterr()
    assert out == "" and "checkpoints.parquet is missing" in err
