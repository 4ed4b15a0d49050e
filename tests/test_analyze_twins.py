"""A checkpoint whose data were copied from another (extract twins) is analysed once."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import zarr
from test_analyze_support import store_with

from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.analyze.engine.twins import twin_sources
from repcollapse.store_schema import StoreWriter, open_store
from repcollapse.store_schema.schema import CHECKPOINT_COORDS
from repcollapse.store_schema.testing import SyntheticSpec

SPEC = SyntheticSpec(
    n_checkpoints=3, n_layers=2, n_tokens=240, n_features=8, token_chunk=96, lora_rank=4
)
QUIET = {"log": lambda _: None}


def test_twin_sources_follow_copies_and_require_the_same_lineage() -> None:
    log = [
        {"checkpoint": "A/01"},
        {"checkpoint": "C/01", "copied_from": "A/01"},
        {"checkpoint": "D/01", "copied_from": "C/01"},  # a copy of a copy
        {"checkpoint": "C/02", "copied_from": "A/02"},  # parents C/01 and A/01 are twins
        {"checkpoint": "E/01", "copied_from": "A/01"},  # another parent: not a twin
    ]
    parent = {"base": None, "A/01": "base", "C/01": "base", "D/01": "base", "A/02": "A/01"}
    parent |= {"C/02": "C/01", "E/01": "other"}
    base = {c: "base" for c in parent}
    ckpts = [*parent, "other"]
    assert twin_sources(log, parent, base, ckpts) == {
        "C/01": "A/01",
        "D/01": "A/01",
        "C/02": "A/02",
    }
    assert twin_sources(log, parent, base, ["C/01"]) == {}  # the source is not analysed


def test_twin_rows_equal_a_computation_without_being_computed(tmp_path) -> None:
    store = store_with(tmp_path / "s.zarr", SPEC)
    ds = open_store(store)
    coords = {k: ds[k].sel(checkpoint="A/01-stage").values.item() for k in CHECKPOINT_COORDS}
    coords.update(name="control/01-stage", sequence="control")
    StoreWriter(store).copy_checkpoint("A/01-stage", coords, {})
    plain = tmp_path / "plain.zarr"
    shutil.copytree(store, plain)  # the same data, no record of the copy: computed normally
    g = zarr.open_group(str(store), mode="r+")
    g.attrs["extraction_log"] = [{"checkpoint": "control/01-stage", "copied_from": "A/01-stage"}]

    aliased = run_metrics(store, tmp_path / "out", **QUIET)
    computed = run_metrics(plain, tmp_path / "out_plain", **QUIET)
    assert "control/01-stage" not in {c for c, _, _ in aliased.computed}
    assert "control/01-stage" in {c for c, _, _ in computed.computed}
    key = ["checkpoint", "metric", "layer", "domain", "span"]
    a = pd.read_parquet(tmp_path / "out" / "metrics.parquet").sort_values(key)
    b = pd.read_parquet(tmp_path / "out_plain" / "metrics.parquet").sort_values(key)
    assert len(a) == len(b) and (a["checkpoint"] == "control/01-stage").sum() > 50
    assert a[key].reset_index(drop=True).equals(b[key].reset_index(drop=True))
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-9, atol=1e-12)
