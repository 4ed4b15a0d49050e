"""The notebook API: docs/notebook.md's session runs as written, and its functions agree with
the tables the CLI writes (they are the same functions, so a disagreement is a wiring bug)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import repcollapse as rc
from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store

REPO = Path(__file__).resolve().parents[1]


def _doc_code() -> str:
    text = (REPO / "docs" / "notebook.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, f"expected one python block in docs/notebook.md, found {len(blocks)}"
    return blocks[0]


def test_the_documented_notebook_session_runs(tmp_path: Path) -> None:
    script = tmp_path / "session.py"
    script.write_text(_doc_code() + "\nimport sys; assert 'torch' not in sys.modules\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "['base', 'A.s0.01-math', 'A.s0.02-code']" in result.stdout
    assert (tmp_path / "nb_tables" / "metrics.parquet").exists()


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api")
    make_synthetic_store(root / "s.zarr", SyntheticSpec(n_layers=3, n_tokens=400, n_features=8))
    rc.run_metrics(root / "s.zarr", root / "t")
    return root


def test_open_store_has_labelled_layer_and_token(tables: Path) -> None:
    ds = rc.open_store(tables / "s.zarr")
    assert list(ds.layer.values) == list(range(ds.sizes["layer"]))
    a = ds.hidden.sel(checkpoint="A/01-stage", layer=2).values
    b = ds.hidden.isel(checkpoint=list(ds.checkpoint.values).index("A/01-stage"), layer=2).values
    np.testing.assert_array_equal(a, b)


def test_long_form_is_metrics_parquet_with_checkpoint_columns(tables: Path) -> None:
    raw = pd.read_parquet(tables / "t" / "metrics.parquet")
    long = rc.load_tables(tables / "t")
    assert len(long) == len(raw)
    assert {"sequence", "stage_index", "seed", "future_score"} <= set(long.columns)
    assert not any(c.endswith(("_x", "_y")) for c in long.columns)
    cols = ["checkpoint", "metric", "layer", "domain", "span"]
    merged = raw.merge(long, on=cols, suffixes=("", "_api"))
    np.testing.assert_array_equal(merged["value"], merged["value_api"])


def test_wide_form_is_the_mean_over_layers_one_to_L(tables: Path) -> None:
    raw = pd.read_parquet(tables / "t" / "metrics.parquet")
    wide = rc.load_tables(tables / "t", wide=True, metrics=["erank_norm"]).set_index("checkpoint")
    sel = raw[(raw.metric == "erank_norm") & (raw.domain == "all") & (raw.span == "all")]
    by_hand = sel[sel.layer >= 1].groupby("checkpoint")["value"].mean()
    assert len(by_hand) == len(wide) == 3
    np.testing.assert_allclose(wide.loc[by_hand.index, "erank_norm"], by_hand, rtol=1e-12)


def test_missing_tables_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="metrics"):
        rc.load_tables(tmp_path)


def test_import_repcollapse_alone_loads_no_analysis_stack() -> None:
    code = (
        "import sys, repcollapse; assert 'pandas' not in sys.modules and 'dask' not in sys.modules"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
