"""Figures: every one is a non-empty PNG (and HTML), and its data re-derives from the tables."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from repcollapse.analyze.report.figures import (
    BUILDERS,
    Ctx,
    make_figures,
)
from repcollapse.analyze.report.style import stage_color
from repcollapse.analyze.stats.regression import StatsConfig, checkpoint_frame
from repcollapse.analyze.tables.read import read_tables
from repcollapse.analyze.tables.synthetic import (
    SyntheticTablesSpec,
    SyntheticTruth,
    make_synthetic_tables,
)
from repcollapse.cli.analyze_tables_cmd import main_figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KEY = ["store_id", "checkpoint"]


@pytest.fixture(scope="module")
def syn(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTruth:
    spec = SyntheticTablesSpec(families=("smollm2", "gemma3", "qwen25"), seeds=(0, 1))
    return make_synthetic_tables(tmp_path_factory.mktemp("tables"), spec)


@pytest.fixture(scope="module")
def figs(syn: SyntheticTruth, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("figs")
    make_figures(syn.tables_dir, out)
    return out


def _data(figs: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(figs / f"{name}.data.csv")


def _tables(syn: SyntheticTruth) -> tuple[pd.DataFrame, pd.DataFrame]:
    d = Path(syn.tables_dir)
    return pd.read_parquet(d / "metrics.parquet"), pd.read_parquet(d / "checkpoints.parquet")


def _chain_a(ck: pd.DataFrame) -> pd.DataFrame:
    return ck[(ck["stage_index"] == 0) | ((ck["sequence"] == "A") & (ck["mitigation"] == "none"))]


def _layer_mean(m: pd.DataFrame, metric: str, span: str = "all") -> pd.Series:
    """Independent re-derivation of the default convention: mean over layers 1..L."""
    sel = m[(m["metric"] == metric) & (m["domain"] == "all") & (m["span"] == span)]
    sel = sel[sel["layer"] == -1] if (sel["layer"] == -1).any() else sel[sel["layer"] >= 1]
    return sel.groupby(KEY)["value"].mean()


def test_every_figure_is_a_nonempty_png_with_html(figs: Path) -> None:
    manifest = json.loads((figs / "figures.json").read_text())
    assert [f["name"] for f in manifest] == list(BUILDERS)
    for f in manifest:
        assert not f.get("skipped"), f
        png = (figs / f["png"]).read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 10_000, f["name"]
        assert (figs / f["html"]).stat().st_size > 1000
        assert len(_data(figs, f["name"])) > 0


def test_layerwise_data_matches_tables(figs: Path, syn: SyntheticTruth) -> None:
    m, ck = _tables(syn)
    lw = m[
        m["metric"].isin(["erank_norm", "aniso_centered", "drift_base"])
        & (m["domain"] == "all")
        & (m["span"] == "all")
        & (m["layer"] >= 0)
    ]
    exp = (
        _chain_a(ck)
        .merge(lw.drop(columns="model_family"), on=KEY)
        .groupby(["model_family", "stage_index", "metric", "layer"])["value"]
        .mean()
    )
    got = _data(figs, "layerwise").set_index(["model_family", "stage_index", "metric", "layer"])
    assert np.allclose(got.loc[exp.index, "value"], exp.to_numpy())
    assert set(got.index.get_level_values("metric")) == {
        "erank_norm",
        "pr_norm",
        "aniso_centered",
        "aniso_uncentered",
        "drift_base",
        "topk_var_10",
    }


def test_objectives_data_matches_tables(figs: Path, syn: SyntheticTruth) -> None:
    m, ck = _tables(syn)
    v = ck.set_index(KEY).assign(erank=_layer_mean(m, "erank_norm")).reset_index()
    par = v[KEY + ["erank"]].rename(columns={"checkpoint": "parent", "erank": "erank_parent"})
    v = v.merge(par, on=["store_id", "parent"])
    v = v[(v["stage_index"] > 0) & (v["mitigation"] == "none")]
    stage = np.where(v["stage_kind"] == "dpo", "preference", v["stage_domain"])
    exp = (v["erank"] - v["erank_parent"]).groupby(stage).mean()
    got = _data(figs, "objectives").query("metric == 'erank_norm'").set_index("objective")
    assert np.allclose(got.loc[exp.index, "mean_delta"], exp.to_numpy())


def test_collapse_future_data_matches_tables(figs: Path, syn: SyntheticTruth) -> None:
    m, ck = _tables(syn)
    ci = m[m["metric"] == "collapse_index"].set_index(["model_family", "checkpoint"])["value"]
    got = _data(figs, "collapse_future").set_index(["model_family", "checkpoint"])
    assert len(got) == len(ck)
    assert np.allclose(got["collapse_index"], ci.loc[got.index])
    fut = ck.set_index(["model_family", "checkpoint"])["future_score"]
    assert np.allclose(got["future_score"], fut.loc[got.index])
    slope, icpt = np.polyfit(got["collapse_index"], got["future_score"], 1)
    assert np.allclose(got["fitted"], icpt + slope * got["collapse_index"])


def test_lora_overlap_data_matches_tables(figs: Path, syn: SyntheticTruth) -> None:
    lo = pd.read_parquet(Path(syn.tables_dir) / "lora_overlap.parquet")
    exp = lo.groupby(["model_family", "checkpoint_a", "checkpoint_b"])["overlap"].mean()
    got = _data(figs, "lora_overlap")
    assert (got["checkpoint_a"] != got["checkpoint_b"]).all()
    for r in got.sample(50, random_state=0).itertuples():
        key = (r.model_family, r.checkpoint_a, r.checkpoint_b)
        alt_key = (r.model_family, r.checkpoint_b, r.checkpoint_a)
        assert r.overlap == pytest.approx(exp[key] if key in exp.index else exp[alt_key])


def test_pareto_data_matches_tables(figs: Path, syn: SyntheticTruth) -> None:
    _, ck = _tables(syn)
    end = ck[(ck["sequence"] == "A") & (ck["stage_index"] == 4)]
    exp = end.groupby(["model_family", "mitigation"])["future_score"].mean()
    got = _data(figs, "pareto").set_index(["model_family", "mitigation"])
    assert np.allclose(got.loc[exp.index, "future_score"], exp.to_numpy())
    assert got["on_frontier"].any() and (got["sequence"] == "A").all()


def test_span_rank_data_matches_tables(figs: Path, syn: SyntheticTruth) -> None:
    m, ck = _tables(syn)
    got = _data(figs, "span_rank").set_index(["model_family", "stage_index", "span"])
    for span in ("prompt", "late_response", "refusal"):
        v = _chain_a(ck).set_index(KEY).assign(value=_layer_mean(m, "erank_norm", span))
        exp = v.groupby(["model_family", "stage_index"])["value"].mean()
        idx = [(f, s, span) for f, s in exp.index]
        assert np.allclose(got.loc[idx, "value"], exp.to_numpy()), span


def _color_scales(spec: Any) -> list[dict]:
    """Every colour scale bound to the 'stage' field anywhere in a Vega-Lite spec."""
    found = []
    if isinstance(spec, dict):
        col = spec.get("color")
        if isinstance(col, dict) and col.get("field") == "stage" and "scale" in col:
            found.append(col["scale"])
        for v in spec.values():
            found += _color_scales(v)
    elif isinstance(spec, list):
        for v in spec:
            found += _color_scales(v)
    return found


def test_stage_colours_are_the_same_in_every_figure(syn: SyntheticTruth) -> None:
    cfg = StatsConfig()
    tables = read_tables(syn.tables_dir)
    ctx = Ctx(tables, checkpoint_frame(tables, cfg), cfg)
    seen: dict[str, str] = {}
    for name in ("layerwise", "objectives", "collapse_future", "span_rank"):
        chart, _, _ = BUILDERS[name](ctx)
        scales = _color_scales(chart.to_dict())
        assert scales, name
        for sc in scales:
            for stage, colour in zip(sc["domain"], sc["range"], strict=True):
                assert colour == stage_color(stage)
                assert seen.setdefault(stage, colour) == colour
    assert stage_color("math") != stage_color("code") and stage_color("new-thing").startswith("#")


def test_missing_inputs_skip_figures_with_a_note(syn: SyntheticTruth, tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    tables.mkdir()
    shutil.copy(Path(syn.tables_dir) / "checkpoints.parquet", tables)
    shutil.copy(Path(syn.tables_dir) / "metrics.parquet", tables)
    out = tmp_path / "figs"
    pngs = make_figures(tables, out, html=False)
    manifest = {f["name"]: f for f in json.loads((out / "figures.json").read_text())}
    assert "lora_overlap.parquet missing" in manifest["lora_overlap"]["skipped"]
    assert len(pngs) == len(BUILDERS) - 1
    (tables / "metrics.parquet").unlink()
    # the loss curves need checkpoints.parquet only; every other figure needs metrics
    assert make_figures(tables, out, html=False) == [out / "loss_curves.png"]
    manifest = json.loads((out / "figures.json").read_text())
    assert all(
        f["skipped"].startswith(f"{f['name']}: skipped (")
        for f in manifest
        if f["name"] != "loss_curves"
    )


def test_main_figures_cli(
    syn: SyntheticTruth, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main_figures(argparse.Namespace(tables_dir=str(tmp_path), out=str(tmp_path / "o"))) == 2
    out, err = capsys.readouterr()
    assert out == "" and "checkpoints.parquet is missing" in err


def _ctx(tables_dir: Path) -> Ctx:
    tables = read_tables(tables_dir)
    cfg = StatsConfig()
    return Ctx(tables, checkpoint_frame(tables, cfg), cfg)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[16:24]
    return int.from_bytes(head[:4], "big"), int.from_bytes(head[4:], "big")


def test_layerwise_wraps_its_panels(figs: Path, syn: SyntheticTruth) -> None:
    """Six panels in one strip were 2287 px wide: now 3 a row, one block per family."""
    spec = BUILDERS["layerwise"](_ctx(syn.tables_dir))[0].to_dict()
    assert len(spec["vconcat"]) == 3  # three families
    assert all(block["columns"] == 3 for block in spec["vconcat"])
    width, height = _png_size(figs / "layerwise.png")
    assert width < 1500 and height > width / 2, (width, height)


def test_pareto_constant_scores_get_a_padded_axis(syn: SyntheticTruth, tmp_path: Path) -> None:
    """Two future scores of 0.75 were drawn on a degenerate axis ('values from 1 to 1')."""
    import re

    import vl_convert as vlc

    tables = tmp_path / "t"
    shutil.copytree(syn.tables_dir, tables)
    ck = pd.read_parquet(tables / "checkpoints.parquet")
    ck.assign(future_score=0.75).to_parquet(tables / "checkpoints.parquet", index=False)
    chart, data, _ = BUILDERS["pareto"](_ctx(tables))
    assert (data["future_score_lo"] < 0.75).all() and (data["future_score_hi"] > 0.75).all()
    svg = vlc.vegalite_to_svg(chart.to_json())
    ranges = re.findall(r"Y-axis titled [^\"]* with values from ([\d.]+) to ([\d.]+)", svg)
    assert ranges, "no y axis found in the SVG"
    for lo, hi in ranges:
        assert float(lo) < 0.75 < float(hi) and float(hi) - float(lo) < 0.1, (lo, hi)


def test_padded_range_widens_each_group() -> None:
    from repcollapse.analyze.report.fig_tradeoffs import padded_range

    d = pd.DataFrame(dict(g=["a", "a", "b", "b"], y=[0.75, 0.75, 0.2, 0.4]))
    out = padded_range(d, "y", "g")
    assert np.allclose(out["y_lo"], [0.735, 0.735, 0.18, 0.18])
    assert np.allclose(out["y_hi"], [0.765, 0.765, 0.42, 0.42])


def test_lora_heatmap_masks_the_diagonal(syn: SyntheticTruth) -> None:
    chart, data, title = BUILDERS["lora_overlap"](_ctx(syn.tables_dir))
    spec = chart.to_dict()
    layers = spec["spec"]["layer"]
    filters = [t["filter"] for lay in layers for t in lay.get("transform", [])]
    assert filters == ["!datum.is_self", "datum.is_self"]
    assert layers[1]["mark"]["color"] == "#d9d9d9"
    drawn = pd.DataFrame(next(iter(spec["datasets"].values())))
    diag = drawn[drawn["is_self"]]
    assert len(diag) > 0 and (diag["checkpoint_a"] == diag["checkpoint_b"]).all()
    assert diag["overlap"].isna().all()  # the diagonal never reaches the colour scale
    assert (data["checkpoint_a"] != data["checkpoint_b"]).all() and "diagonal masked" in title
