"""`study compare`: a re-run's tables against a reference's, by lineage, on tables built for it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from repcollapse.analyze.tables.synthetic_claims import ClaimTablesSpec, make_claim_tables
from repcollapse.study.compare import CompareError, compare, tables_dir


def _renamed(src: Path, dst: Path, seeds: set[int] | None = None) -> Path:
    """The same tables under other checkpoint names and store ids (another naming scheme), and
    optionally only some seeds' chains (a shard) with the base."""
    dst.mkdir(parents=True)
    ck = pd.read_parquet(src / "checkpoints.parquet")
    keep = ck["stage_index"].eq(0) | (ck["seed"].isin(seeds) if seeds else True)
    names = {c: f"new-{i}" for i, c in enumerate(ck["checkpoint"])}
    for f in src.glob("*.parquet"):
        t = pd.read_parquet(f)
        if "checkpoint" in t:
            t = t[t["checkpoint"].isin(set(ck.loc[keep, "checkpoint"]))]
            t = t.assign(checkpoint=t["checkpoint"].map(names))
        if "store_id" in t:
            t = t.assign(store_id="re-" + t["store_id"])
        t.to_parquet(dst / f.name)
    return dst


def test_an_identical_rerun_under_other_names_pairs_every_checkpoint(tmp_path: Path) -> None:
    ref = make_claim_tables(tmp_path / "ref", ClaimTablesSpec())
    new = _renamed(ref, tmp_path / "new")
    c = compare(ref, new)
    n = len(pd.read_parquet(ref / "checkpoints.parquet"))
    assert c.only_ref == 0 and c.only_new == 0
    assert (
        c.scores[["model_family", "sequence", "mitigation", "seed", "stage_index"]]
        .drop_duplicates()
        .shape[0]
        == n
    )
    assert (c.scores["abs_diff"] == 0).all() and len(c.scores) > 0
    assert (c.metrics["identical"] == c.metrics["paired"]).all()
    assert c.metrics["paired"].sum() == len(pd.read_parquet(ref / "metrics.parquet"))
    assert c.within["inside"].all() and (c.within["shift"] == 0).all()
    assert any("identical" in line for line in c.lines())


def test_a_one_seed_rerun_is_measured_in_the_references_half_widths(tmp_path: Path) -> None:
    ref = make_claim_tables(tmp_path / "ref", ClaimTablesSpec())
    new = _renamed(ref, tmp_path / "new", seeds={0})
    ck = pd.read_parquet(new / "checkpoints.parquet")
    hit = (ck["sequence"] == "A") & (ck["stage_index"] == 2) & (ck["mitigation"] == "none")
    fam = ck.loc[hit, "model_family"].iloc[0]
    hit &= ck["model_family"] == fam
    ck.loc[hit, "future_score"] += 0.5
    ck.to_parquet(new / "checkpoints.parquet")
    m = pd.read_parquet(new / "metrics.parquet")
    m.loc[m.index[0], "value"] *= 1.1
    m.to_parquet(new / "metrics.parquet")

    c = compare(ref, new)
    full = pd.read_parquet(ref / "checkpoints.parquet")
    assert c.only_new == 0 and c.only_ref == int((full["stage_index"] > 0).sum() * 2 / 3)
    moved = c.scores[c.scores["abs_diff"] > 0]
    assert list(moved["score"]) == ["future_score"] and moved["abs_diff"].iloc[0] == pytest.approx(
        0.5
    )
    assert c.metrics["paired"].sum() - c.metrics["identical"].sum() == 1
    assert c.metrics["max_rel_diff"].max() == pytest.approx(0.1)
    # brute force: the reference's t interval over its 3 seeds at that stage
    x = full.loc[
        (full["sequence"] == "A")
        & (full["stage_index"] == 2)
        & (full["mitigation"] == "none")
        & (full["model_family"] == fam),
        "future_score",
    ].to_numpy()
    half = scipy.stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    w = c.within.set_index(["model_family", "sequence", "mitigation", "stage_index", "quantity"])
    assert w.loc[(fam, "A", "none", 2, "future_score"), "shift"] == pytest.approx(0.5 / half)
    rest = w.drop(index=(fam, "A", "none", 2, "future_score"))
    assert (rest["shift"] == 0).all() and (rest["n_seeds"] == 1).all()


def test_tables_are_found_in_a_study_output_or_a_published_result(tmp_path: Path) -> None:
    t = make_claim_tables(tmp_path / "t", ClaimTablesSpec())
    shutil.copytree(t, tmp_path / "out" / "merged")
    shutil.copytree(t, tmp_path / "pub" / "tables")
    assert tables_dir(tmp_path / "out") == tmp_path / "out" / "merged"
    assert tables_dir(tmp_path / "pub") == tmp_path / "pub" / "tables"
    with pytest.raises(CompareError, match="expected a tables directory"):
        tables_dir(tmp_path / "nothing")


def test_tables_with_no_checkpoint_in_common_are_refused(tmp_path: Path) -> None:
    a = make_claim_tables(tmp_path / "a", ClaimTablesSpec(families=("x",)))
    b = make_claim_tables(tmp_path / "b", ClaimTablesSpec(families=("y",)))
    with pytest.raises(CompareError, match="in common"):
        compare(a, b)


def test_the_cli_prints_the_comparison_and_refuses_one_directory(tmp_path: Path, capsys) -> None:
    from repcollapse.cli.main import main

    ref = make_claim_tables(tmp_path / "ref", ClaimTablesSpec())
    new = _renamed(ref, tmp_path / "new", seeds={1})
    assert main(["study", "compare", str(ref), str(new), "--out", str(tmp_path / "w.csv")]) == 0
    out = capsys.readouterr().out
    assert "checkpoints:" in out and "identical" in out
    w = pd.read_csv(tmp_path / "w.csv")
    assert len(w) > 0 and w["inside"].all()
    assert main(["study", "compare", str(ref)]) == 2
    err = capsys.readouterr()
    assert "expected a reference and a re-run" in err.err and err.out == ""


def test_a_zero_width_reference_interval_is_left_when_the_rerun_differs(tmp_path: Path) -> None:
    # Every reference seed has the same future score at one stage (a score at its floor): the
    # interval has zero width, and a re-run that differs there is not within it.
    ref = make_claim_tables(tmp_path / "ref", ClaimTablesSpec())
    ck = pd.read_parquet(ref / "checkpoints.parquet")
    hit = (ck["sequence"] == "A") & (ck["stage_index"] == 2) & (ck["mitigation"] == "none")
    ck.loc[hit, "future_score"] = 0.0  # both families
    ck.to_parquet(ref / "checkpoints.parquet")
    new = _renamed(ref, tmp_path / "new")
    ck = pd.read_parquet(new / "checkpoints.parquet")
    ck.loc[hit.to_numpy() & (ck["model_family"] == "fam_a").to_numpy(), "future_score"] = 0.25
    ck.to_parquet(new / "checkpoints.parquet")
    c = compare(ref, new)
    assert "largest shift inf half-widths" in c.lines()[-1], c.lines()
    w = c.within.set_index(["model_family", "sequence", "mitigation", "stage_index", "quantity"])
    row = w.loc[("fam_a", "A", "none", 2, "future_score")]
    assert row["half_width"] == 0 and row["new"] == pytest.approx(0.25)
    assert not row["inside"] and row["shift"] == np.inf
    # equal values on a zero-width interval stay inside, shift 0
    same = w.loc[("fam_b", "A", "none", 2, "future_score")]
    assert same["half_width"] == 0 and same["inside"] and same["shift"] == 0


def test_seeds_only_in_the_rerun_do_not_enter_its_mean(tmp_path: Path) -> None:
    # The reference ran seeds 0 and 1, the re-run 0, 1 and 2: 'over the same seeds' is 0 and 1
    # on both sides, so an identical re-run of those two shifts nothing, whatever seed 2 says.
    both = make_claim_tables(tmp_path / "all", ClaimTablesSpec())
    ref = _renamed(both, tmp_path / "ref", seeds={0, 1})
    new = _renamed(both, tmp_path / "new")
    ck = pd.read_parquet(new / "checkpoints.parquet")
    ck.loc[ck["seed"] == 2, "future_score"] += 0.3
    ck.to_parquet(new / "checkpoints.parquet")
    c = compare(ref, new)
    assert c.only_ref == 0 and c.only_new > 0
    assert (c.within["shift"] == 0).all(), c.within[c.within["shift"] > 0].head()
    assert (c.within["n_seeds"] == 2).all()


def test_two_models_of_one_family_label_pair_each_with_itself(tmp_path: Path) -> None:
    # Two models of one architecture label (two tiny llamas): their checkpoints share the
    # family label and every other lineage column, and must not be paired across models.
    ref = make_claim_tables(tmp_path / "ref", ClaimTablesSpec())
    ck = pd.read_parquet(ref / "checkpoints.parquet")
    ck["model_family"] = "llama"
    ck.to_parquet(ref / "checkpoints.parquet")
    new = _renamed(ref, tmp_path / "new")
    c = compare(ref, new)
    assert c.only_ref == 0 and c.only_new == 0
    n = len(ck)
    assert (c.scores.groupby("score").size() <= n).all()  # no checkpoint paired twice
    assert (
        c.scores[["model_family", "sequence", "mitigation", "seed", "stage_index"]]
        .drop_duplicates()
        .shape[0]
        == n
    )
    assert (c.scores["abs_diff"] == 0).all()
    assert (c.metrics["identical"] == c.metrics["paired"]).all()
    assert c.metrics["paired"].sum() == len(pd.read_parquet(ref / "metrics.parquet"))


def test_metric_rows_of_another_option_set_are_not_paired(tmp_path: Path) -> None:
    # metrics.parquet may hold several option sets (analyze metrics run twice with different
    # options); the comparison pairs the set the stats read, as every reader does, not a mix.
    ref = make_claim_tables(tmp_path / "ref", ClaimTablesSpec())
    m = pd.read_parquet(ref / "metrics.parquet").assign(options_key="default")
    other = m.assign(options_key="default;include_sinks=True", value=m["value"] * 2)
    pd.concat([m, other], ignore_index=True).to_parquet(ref / "metrics.parquet")
    new = _renamed(ref, tmp_path / "new")
    c = compare(ref, new)
    assert c.metrics["paired"].sum() == len(m)
    assert (c.metrics["identical"] == c.metrics["paired"]).all()


def test_a_score_missing_on_one_side_is_told_not_hidden(tmp_path: Path) -> None:
    # A re-run whose evaluation lost a score: not identical, and no difference to measure; the
    # summary says so rather than 'largest difference 0'.
    ref = make_claim_tables(tmp_path / "ref", ClaimTablesSpec())
    new = _renamed(ref, tmp_path / "new")
    ck = pd.read_parquet(new / "checkpoints.parquet")
    ck.loc[ck.index[3], "future_score"] = np.nan
    ck.to_parquet(new / "checkpoints.parquet")
    m = pd.read_parquet(new / "metrics.parquet")
    m.loc[m.index[0], "value"] = np.nan
    m.to_parquet(new / "metrics.parquet")
    lines = compare(ref, new).lines()
    scores = next(x for x in lines if x.startswith("behavioural scores"))
    assert "1 present on one side only" in scores, lines
    values = next(x for x in lines if x.startswith("metric values"))
    assert "1 present on one side only" in values, lines


def test_a_checkpoint_without_scores_on_either_side_still_counts_as_paired(
    tmp_path: Path,
) -> None:
    # A shard that did not run the study's first seed has its base without behaviour (only
    # that shard evaluates it): two such outputs still pair the base, by lineage.
    ref = make_claim_tables(tmp_path / "ref", ClaimTablesSpec())
    ck = pd.read_parquet(ref / "checkpoints.parquet")
    ck.loc[ck["stage_index"] == 0, ["target_score", "future_score", "val_loss"]] = np.nan
    ck.to_parquet(ref / "checkpoints.parquet")
    new = _renamed(ref, tmp_path / "new")
    lines = compare(ref, new).lines()
    assert (
        lines[0] == f"checkpoints: {len(ck)} paired, 0 only in the reference, 0 only in the re-run"
    )


def test_a_rerun_without_metric_values_is_told(tmp_path: Path) -> None:
    # A re-run whose metrics never ran has no metrics.parquet: the summary must not read as a
    # clean reproduction of the geometry by saying nothing about it.
    ref = make_claim_tables(tmp_path / "ref", ClaimTablesSpec())
    new = _renamed(ref, tmp_path / "new")
    (new / "metrics.parquet").unlink()
    lines = compare(ref, new).lines()
    assert any(x.startswith("metric values: none paired") for x in lines), lines


def test_a_reference_without_intervals_is_told(tmp_path: Path) -> None:
    # A one-seed reference has no interval over seeds: nothing to measure a shift in, and the
    # summary says so rather than leaving the check out.
    ref = make_claim_tables(tmp_path / "ref", ClaimTablesSpec(seeds=(0,)))
    new = _renamed(ref, tmp_path / "new")
    c = compare(ref, new)
    assert c.within.empty
    assert any(
        x.startswith("stage-table values: none with a reference interval") for x in c.lines()
    )


def test_a_metric_that_moves_off_zero_is_the_largest_relative_difference(tmp_path: Path) -> None:
    # The base's drift from itself is exactly 0: a re-run where it is not has an infinite
    # relative difference, not none.
    ref = make_claim_tables(tmp_path / "ref", ClaimTablesSpec())
    new = _renamed(ref, tmp_path / "new")
    m = pd.read_parquet(new / "metrics.parquet")
    ck = pd.read_parquet(new / "checkpoints.parquet")
    base = set(ck.loc[ck["stage_index"] == 0, "checkpoint"])
    hit = (m["metric"] == "drift_base") & m["checkpoint"].isin(base)
    assert (m.loc[hit, "value"] == 0).all() and hit.any()
    m.loc[hit, "value"] = 1e-3
    m.to_parquet(new / "metrics.parquet")
    c = compare(ref, new)
    row = c.metrics.set_index("metric").loc["drift_base"]
    assert row["max_rel_diff"] == np.inf and row["max_abs_diff"] == pytest.approx(1e-3)
    values = next(x for x in c.lines() if x.startswith("metric values"))
    assert "largest relative difference inf (drift_base)" in values, values
