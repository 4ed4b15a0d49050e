"""bench/bench_concurrent.py at its smoke size: N writer processes filling reserved slots at once
give the store one process filling them in order gives (validated, equal array for array), and
the equality check it relies on does see a changed value."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_concurrent as B  # noqa: E402


def test_concurrent_writers_equal_a_sequential_run_and_a_change_is_seen(tmp_path: Path) -> None:
    out = B.run(tmp_path, size="smoke", writers=2, keep=True)
    assert out["validated"] and out["equal"] and out["writers"] == 2
    assert set(out["fill_s"]) == {"sequential", "concurrent"}
    assert all(v > 0 for v in out["fill_s"].values())
    assert [label for label, *_ in out["lines"]][2].startswith("fill the same 2 slots")
    seq, conc = tmp_path / "sequential.zarr", tmp_path / "concurrent.zarr"
    assert B.same_stores(seq, conc) == []
    g = zarr.open_group(str(conc), mode="r+", use_consolidated=False)
    block = np.asarray(g["hidden"][1, 0, 0:4])
    g["hidden"][1, 0, 0:4] = block + np.float16(1)
    assert B.same_stores(seq, conc) == ["hidden"]
