"""bench/bench_gpu.py, prepared for a GPU machine, kept working on CPU: its CPU run, and that its
comparisons see a difference when there is one."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import bench_gpu as G  # noqa: E402


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("gpu")
    return work, G.run(work, "tiny", records=6, device="cpu", backend="numpy")


def test_the_cpu_run_agrees_with_itself_and_reports_every_line(cpu_run: tuple[Path, dict]) -> None:
    _, result = cpu_run
    assert result["within_tolerance"] == {"hidden": True, "metrics": True}
    assert result["hidden_rel_error_per_layer"] and max(result["hidden_rel_error_per_layer"]) == 0
    assert (
        result["metric_rel_diff_backend"] and max(result["metric_rel_diff_backend"].values()) == 0
    )
    assert len(result["lines"]) == 7 and result["tokens_not_sink"] > 0


def test_a_changed_layer_shows_in_the_hidden_errors(
    cpu_run: tuple[Path, dict], tmp_path: Path
) -> None:
    work, _ = cpu_run
    changed = tmp_path / "changed.zarr"
    shutil.copytree(work / "cpu.zarr", changed)
    hidden = zarr.open_group(str(changed), mode="r+")["hidden"]
    block = np.asarray(hidden[0, 1])
    hidden[0, 1] = (block.astype(np.float32) * 1.01).astype(block.dtype)  # 1% off on layer 1
    errors = G.hidden_errors(work / "cpu.zarr", changed)
    assert errors[0] == 0 and errors[2:] == [0.0] * (len(errors) - 2)
    assert errors[1] == pytest.approx(0.01, rel=0.05)


def _table(values: list[float]) -> pd.DataFrame:
    rows = [("erank", "base", i, "all", "all", "default") for i in range(len(values))]
    df = pd.DataFrame(rows, columns=G.KEYS)
    df["value"] = values
    return df


def test_worst_differences_finds_changes_nan_and_missing_rows() -> None:
    assert G.worst_differences(_table([1.0, 2.0]), _table([1.0, 2.0])) == {"erank": 0.0}
    assert G.worst_differences(_table([1.0, 2.0]), _table([1.0, 2.2]))["erank"] == pytest.approx(
        0.2 / 2.2
    )
    assert G.worst_differences(_table([np.nan]), _table([np.nan])) == {"erank": 0.0}
    assert G.worst_differences(_table([1.0]), _table([np.nan])) == {"erank": np.inf}
    with pytest.raises(ValueError, match="one table only"):
        G.worst_differences(_table([1.0, 2.0]), _table([1.0]))
