"""metrics.parquet records the options each row was computed with, keeps the rows of other option
sets, readers use one option set (never a mix), and stale statistics or figures are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_analyze_support import store_with

from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.analyze.engine.table_rows import layer_spec
from repcollapse.analyze.layers import summary_layers
from repcollapse.analyze.options import Options
from repcollapse.analyze.report.figures import make_figures
from repcollapse.analyze.report.html import MissingReportInputs, ReportConfig, build_report
from repcollapse.analyze.stats.regression import StatsConfig, run_stats
from repcollapse.analyze.tables.query import query
from repcollapse.analyze.tables.read import (
    LayerConvention,
    TablesError,
    read_tables,
    stale_stats,
)
from repcollapse.analyze.tables.write import LABEL_COLUMNS, METRIC_COLUMNS, METRIC_DOCS
from repcollapse.api import load_tables
from repcollapse.store_schema.testing import SyntheticSpec

SPEC = SyntheticSpec(n_checkpoints=3, n_layers=2, n_tokens=240, n_features=8, token_chunk=96)
QUIET = {"log": lambda _msg: None}


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    key = ["options_key", "checkpoint", "metric", "layer", "domain", "span"]
    out = df.sort_values(key, kind="stable").reset_index(drop=True)
    for c in out.columns:
        if isinstance(out[c].dtype, pd.CategoricalDtype):
            out[c] = out[c].astype(str)
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return store_with(tmp_path_factory.mktemp("opt") / "s.zarr", SPEC)


@pytest.fixture(scope="module")
def two_runs(store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("two") / "tables"
    run_metrics(store, out, **QUIET)
    first = pd.read_parquet(out / "metrics.parquet")
    run_metrics(store, out, metrics=["erank"], options=Options(include_sinks=True), **QUIET)
    both = pd.read_parquet(out / "metrics.parquet")
    return {"out": out, "first": first, "both": both}


def test_a_run_with_other_options_keeps_every_row_of_the_first(two_runs: dict) -> None:
    first, both = _sorted(two_runs["first"]), _sorted(two_runs["both"])
    assert set(first["options_key"]) == {"default"} and len(first) > 100
    kept = both[both["options_key"] == "default"].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, first)  # every row of the first run, unchanged
    new = both[both["options_key"] != "default"]
    assert set(new["options_key"]) == {"include_sinks=True"}
    assert not new["sinks_excluded"].any() and set(new["metric"]) >= {"erank"}
    # the new option set holds the erank rows of every checkpoint and layer
    n_erank = len(first[first["metric"] == "erank"])
    assert len(new[new["metric"] == "erank"]) == n_erank
    assert len(both) == len(first) + len(new)


def test_provenance_describes_every_option_set(two_runs: dict) -> None:
    prov = json.loads((two_runs["out"] / "provenance.json").read_text())
    assert set(prov["analyses"]) == {"default", "include_sinks=True"}
    assert prov["analyses"]["include_sinks=True"]["options"]["include_sinks"] is True
    assert prov["analyses"]["default"]["options"]["include_sinks"] is False
    assert prov["analysis"]["options_key"] == "include_sinks=True"  # the latest run


def test_rerunning_one_option_set_replaces_only_its_rows(store: Path, two_runs: dict) -> None:
    out = two_runs["out"]
    run_metrics(store, out, metrics=["erank"], options=Options(include_sinks=True), **QUIET)
    again = _sorted(pd.read_parquet(out / "metrics.parquet"))
    pd.testing.assert_frame_equal(again, _sorted(two_runs["both"]))  # no duplicates


def test_readers_use_the_default_option_set_and_never_mix(two_runs: dict) -> None:
    out = two_runs["out"]
    t = read_tables(out)
    assert t.option_set == "default" and set(t.metrics["options_key"]) == {"default"}
    assert t.metrics["sinks_excluded"].all()
    named = read_tables(out, "include_sinks=True")
    assert set(named.metrics["metric"]) >= {"erank"} and not named.metrics["sinks_excluded"].any()
    with pytest.raises(TablesError, match=r"'nope' not found.*'default'.*'include_sinks=True'"):
        read_tables(out, "nope")
    long = load_tables(out, option_set="include_sinks=True")
    assert set(long["options_key"]) == {"include_sinks=True"}
    wide = load_tables(out, wide=True, metrics=["erank"], option_set="include_sinks=True")
    default_wide = load_tables(out, wide=True, metrics=["erank"])
    assert not (wide["erank"].to_numpy() == default_wide["erank"].to_numpy()).all()


def test_several_option_sets_without_default_is_an_error_naming_them(
    store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "t"
    run_metrics(store, out, metrics=["erank"], layers=[1], **QUIET)
    assert read_tables(out).option_set == "layers=1"  # the only one: used
    run_metrics(store, out, metrics=["erank"], options=Options(include_sinks=True), **QUIET)
    with pytest.raises(TablesError, match=r"2 option sets.*'include_sinks=True'.*'layers=1'"):
        read_tables(out)
    with pytest.raises(TablesError, match="option sets"):
        run_stats(out, write=False)
    cfg = StatsConfig(convention=LayerConvention(option_set="layers=1"))
    stats = run_stats(out, cfg, write=False)  # the named set is read: no error
    assert "Metric rows of option set 'layers=1'." in set(stats["notes"]["note"])


def test_layer_spec_writes_ranges() -> None:
    assert layer_spec([6, 0, 1, 2, 3]) == "0-3,6"
    assert layer_spec([4]) == "4" and layer_spec([]) == ""


def test_rows_say_how_they_were_computed(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "t"
    opts = Options(precision="float64", temperatures=(2.0,))
    run_metrics(store, out, layers=[1], options=opts, **QUIET)
    m = pd.read_parquet(out / "metrics.parquet")
    assert list(m.columns) == list(METRIC_COLUMNS)
    assert set(m["options_key"]) == {"precision=float64;temperatures=2;layers=1"}
    assert set(m["precision"]) == {"float64"}
    at_t = m[m["metric"].astype(str).str.contains("@T2")]
    assert not at_t.empty and (at_t["temperature"] == 2.0).all()
    assert m.loc[~m.index.isin(at_t.index), "temperature"].isna().all()
    ci = m[(m["metric"] == "collapse_index") & (m["layer"] == -1)]
    assert not ci.empty and set(ci["layers"]) == {layer_spec(summary_layers([1]))} == {"1"}
    assert set(m.loc[m["layer"] >= 0, "layers"]) == {""}


def test_collapse_index_layers_differ_between_layer_selections(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "t"
    run_metrics(store, out, **QUIET)
    run_metrics(store, out, layers=[0], **QUIET)
    m = pd.read_parquet(out / "metrics.parquet")
    ci = m[(m["metric"] == "collapse_index") & (m["layer"] == -1)]
    assert dict(zip(ci["options_key"], ci["layers"], strict=False)) == {
        "default": "1",
        "layers=0": "0",
    }


def test_parquet_metadata_and_dictionary_labels(two_runs: dict) -> None:
    path = two_runs["out"] / "metrics.parquet"
    schema = pq.read_schema(path)
    cols = json.loads(schema.metadata[b"repcollapse.columns"])
    assert set(cols) == set(METRIC_COLUMNS) == set(METRIC_DOCS)
    assert cols["n_tokens"]["unit"] == "tokens" and cols["value"]["description"]
    assert schema.field("layer").metadata[b"unit"] == b"layer index"
    for name in METRIC_COLUMNS:
        is_dict = pa.types.is_dictionary(schema.field(name).type)
        assert is_dict == (name in LABEL_COLUMNS), name
    ck = pq.read_schema(two_runs["out"] / "checkpoints.parquet")
    assert pa.types.is_dictionary(ck.field("checkpoint").type)
    # pandas and DuckDB (repcollapse query) read the labels as text
    df = pd.read_parquet(path)
    assert (df["metric"].astype(str) == "erank").any()
    got = query(
        "SELECT options_key, count(*) AS n FROM metrics GROUP BY options_key ORDER BY 1",
        two_runs["out"],
    )
    want = df.groupby(df["options_key"].astype(str)).size()
    assert dict(zip(got["options_key"], got["n"], strict=True)) == want.to_dict()


def test_report_refuses_stale_statistics_and_figures(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "t"
    run_metrics(store, out, metrics=["erank"], **QUIET)
    run_stats(out)
    make_figures(out, tmp_path / "figures")
    assert stale_stats(out) is None
    run_metrics(store, out, metrics=["erank"], options=Options(include_sinks=True), **QUIET)
    assert stale_stats(out) is None  # another option set: the rows the stats read are the same
    run_metrics(store, out, **QUIET)  # the default option set now holds every metric
    assert "stale" in (stale_stats(out) or "")
    with pytest.raises(MissingReportInputs, match="analyze stats' again"):
        build_report(out, tmp_path / "r.html")
    run_stats(out)
    with pytest.raises(MissingReportInputs, match="analyze figures' again"):
        build_report(out, tmp_path / "r.html")
    make_figures(out, tmp_path / "figures")
    assert build_report(out, tmp_path / "r.html").exists()
    # --compute-missing recomputes stale statistics and says so
    run_metrics(store, out, metrics=["erank"], layers=[1], **QUIET)  # other set: still fresh
    (out / "stats_inputs.json").write_text(json.dumps({"option_set": "default"}))
    page = build_report(out, tmp_path / "r.html", report=ReportConfig(compute_missing=True))
    assert "Statistics recomputed for this report" in page.read_text()
    assert stale_stats(out) is None


def test_each_store_with_its_own_layer_selection_is_read_per_store(tmp_path: Path) -> None:
    # A study analyses every 5th layer of each family: SmolLM2 (31 stored layers) gets
    # 'layers=0,5,10,15,20,25,30' and Gemma 3 (19) 'layers=0,5,10,15,18'. One option set per
    # store, differing only in its layers, is no mix: before, the merged tables were refused
    # ('holds rows of 2 option sets') and the two-family study's report step failed.
    from repcollapse.analyze.tables.synthetic_claims import ClaimTablesSpec, make_claim_tables

    d = make_claim_tables(tmp_path / "t", ClaimTablesSpec())
    m = pd.read_parquet(d / "metrics.parquet")
    keys = {"syn-fam_a": "layers=0,5,10", "syn-fam_b": "layers=0,5,9"}
    m["options_key"] = m["store_id"].map(keys)
    m.to_parquet(d / "metrics.parquet")
    t = read_tables(d)
    assert len(t.metrics) == len(m)  # every store's rows, each under its own option set
    assert t.option_set == "per store: syn-fam_a layers=0,5,10; syn-fam_b layers=0,5,9"
    stats = run_stats(d, write=False)
    assert "per store" in " ".join(stats["notes"]["note"])
    # a difference other than the layers is still a mix, refused
    m["options_key"] = m["store_id"].map(
        {"syn-fam_a": "layers=0,5,10", "syn-fam_b": "include_sinks=True;layers=0,5,9"}
    )
    m.to_parquet(d / "metrics.parquet")
    with pytest.raises(TablesError, match="2 option sets"):
        read_tables(d)
    # and one store holding two option sets still needs a choice
    m["options_key"] = ["layers=0,5,10", "layers=0,5"] * (len(m) // 2) + ["layers=0,5"] * (
        len(m) % 2
    )
    m.to_parquet(d / "metrics.parquet")
    with pytest.raises(TablesError, match="2 option sets"):
        read_tables(d)
