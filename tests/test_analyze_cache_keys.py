"""Cache keys are injective: every checkpoint name gets its own files, whatever its characters.

Names with dots are normal in sweeps (``lr0.001``, ``v1.5``); a key built with
``Path.with_suffix`` once cut them at the last dot, so ``sweep/lr0.001`` and ``sweep/lr0.0001``
shared one file and a cached re-run listed one checkpoint twice and dropped the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from test_analyze_support import store_with

from repcollapse.analyze.engine.cache import MetricCache, rows_frame
from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.store_schema import StoreWriter
from repcollapse.store_schema.testing import SyntheticSpec

NAMES = [
    "sweep/lr0.001",
    "sweep/lr0.0001",
    "sweep/lr0.001.",
    "v1.5",
    "v1.5.0",
    "beta0.1",
    "beta0_1",
    "beta0-1",
    "a b",
    "a_b",
    "a/b",
    "a\\b",
    "ünïcödé/チェック",
    "unicode/____",
    "Base",
    "base",
    "BASE",
    ".hidden",
    "..",
    "x" * 200,
    "x" * 199 + "y",
]


def _cache_files(cache: MetricCache) -> list[Path]:
    return sorted(p for p in cache.dir.iterdir() if p.is_file())


def test_every_name_round_trips_through_its_own_files(tmp_path: Path) -> None:
    cache = MetricCache(tmp_path, "store-1")
    for i, name in enumerate(NAMES):
        rows = rows_frame([("erank", 1, "k", name, 0, "all", "all", float(i), 10)])
        cache.add(name, rows, [("erank", 1, "k", 0)])
    files = _cache_files(cache)
    assert len(files) == 2 * len(NAMES)  # one rows file and one done file per name
    # on a case-insensitive filesystem (macOS, Windows) names differing only in case must not
    # meet either: the file names stay distinct after case folding
    assert len({p.name.casefold() for p in files}) == len(files)
    assert all(len(p.name.encode()) < 255 for p in files)
    fresh = MetricCache(tmp_path, "store-1")  # read back from disk, not from memory
    for i, name in enumerate(NAMES):
        got = fresh.rows(name)
        assert list(got["checkpoint"]) == [name] and list(got["value"]) == [float(i)]
        assert fresh.done(name) == {("erank", 1, "k", 0)}


def test_file_names_stay_readable(tmp_path: Path) -> None:
    cache = MetricCache(tmp_path, "s")
    cache.add("sweep/lr0.001", rows_frame([]), [("erank", 1, "k", 0)])
    names = [p.name for p in _cache_files(cache)]
    assert all(n.startswith("sweep_lr0.001-") for n in names), names


def _dotted_store(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """A synthetic chain whose checkpoint names differ only after a dot, written as such (the
    real writer, so its checksums match: renaming afterwards would be refused as damage)."""
    rename = {"A/01-stage": "sweep/lr0.001", "A/02-stage": "sweep/lr0.0001"}
    reserve = StoreWriter.reserve

    def renamed(self: StoreWriter, coords: Mapping[str, Any]) -> int:
        coords = {**coords, **{k: rename.get(coords[k], coords[k]) for k in ("name", "parent")}}
        return reserve(self, coords)

    with monkeypatch.context() as m:
        m.setattr(StoreWriter, "reserve", renamed)
        store = store_with(path, SyntheticSpec(n_checkpoints=3, n_layers=2, n_tokens=120))
    return store, ["base", *rename.values()]


def test_cached_rerun_keeps_both_dotted_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, names = _dotted_store(tmp_path / "s.zarr", monkeypatch)
    out = tmp_path / "tables"
    quiet = {"log": lambda _: None, "metrics": ["erank"]}
    run_metrics(store, out, **quiet)
    first = pd.read_parquet(out / "metrics.parquet")
    assert set(first.checkpoint) == set(names)
    again = run_metrics(store, out, **quiet)
    assert again.computed == []
    second = pd.read_parquet(out / "metrics.parquet")
    assert sorted(second.checkpoint) == sorted(first.checkpoint)
    key = ["checkpoint", "layer", "domain", "span"]
    pd.testing.assert_frame_equal(
        first.sort_values(key).reset_index(drop=True),
        second.sort_values(key).reset_index(drop=True),
    )
    # the two dotted checkpoints really differ (else the test could not see a swap)
    a, b = (first[(first.checkpoint == n) & (first.domain == "all")] for n in names[1:])
    assert not np.allclose(a["value"].to_numpy(), b["value"].to_numpy())
