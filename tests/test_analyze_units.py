"""Small units: the array namespace, options, the token plan, effective rank."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_analyze_support import SMALL

from repcollapse.analyze.engine import xp
from repcollapse.analyze.engine.moments import erank_of
from repcollapse.analyze.engine.tokens import build_plan
from repcollapse.analyze.options import Options
from repcollapse.store_schema.testing import synthetic_token_coords


class _FakeCupyArray:
    __module__ = "cupy._core.core"


def test_namespace_is_numpy_for_numpy_and_refuses_mixtures() -> None:
    assert xp.namespace(np.zeros(2), np.ones(3), 1.0) is np
    with pytest.raises(TypeError, match="mixed array types"):
        xp.namespace(np.zeros(2), _FakeCupyArray())
    assert xp.backend("numpy") is np
    if not xp.cupy_available():
        assert xp.backend("auto") is np
        with pytest.raises(RuntimeError, match="CuPy or a CUDA device is missing"):
            xp.backend("cupy")
    with pytest.raises(ValueError, match=r"'gpu' is not one of \['auto', 'numpy', 'cupy'\]"):
        xp.backend("gpu")


def test_options_name_the_bad_value() -> None:
    with pytest.raises(
        ValueError, match=r"precision: expected one of \['float32', 'float64'\], found 'half'"
    ):
        Options(precision="half")
    with pytest.raises(ValueError, match=r"topk: expected positive integers, found \[0\]"):
        Options(topk=(0, 10))
    a, b = Options(seed=1), Options(seed=2)
    assert a.key() == b.key() and a.key(("seed",)) != b.key(("seed",))


@pytest.mark.parametrize("include_sinks", [False, True])
def test_plan_cells_partition_the_kept_tokens(include_sinks: bool) -> None:
    coords = synthetic_token_coords(SMALL)
    plan = build_plan(coords, 128, include_sinks=include_sinks)
    keep = np.ones(SMALL.n_tokens, bool) if include_sinks else ~coords["is_sink"]
    seen = np.concatenate([c.t0 + c.order for c in plan.chunks])
    assert sorted(seen) == list(np.flatnonzero(keep))
    assert plan.cell_count.sum() == keep.sum()
    for sel in plan.selections():
        dom, span = sel
        mask = keep.copy()
        if dom != "all":
            mask &= coords["domain"] == dom
        if span != "all":
            mask &= coords["span"] == span
        assert plan.cell_count[plan.cells_of(sel)].sum() == mask.sum(), sel
    with pytest.raises(KeyError, match="domain must be one of"):
        plan.cells_of(("nope", "all"))


def test_subsample_is_seeded_and_capped() -> None:
    coords = synthetic_token_coords(SMALL)
    a = build_plan(coords, 128, sample_per_domain=20, seed=3)
    b = build_plan(coords, 128, sample_per_domain=20, seed=3)
    c = build_plan(coords, 128, sample_per_domain=20, seed=4)
    assert np.array_equal(a.sample_tokens, b.sample_tokens)
    assert not np.array_equal(a.sample_tokens, c.sample_tokens)
    assert np.bincount(a.sample_domain).max() == 20
    assert not coords["is_sink"][a.sample_tokens].any()


def test_erank_of_known_spectra() -> None:
    assert float(erank_of(np.ones(7))) == pytest.approx(7.0)
    assert float(erank_of(np.array([5.0, 0.0, 0.0]))) == pytest.approx(1.0)
    assert np.isnan(erank_of(np.zeros(3)))
    np.testing.assert_allclose(erank_of(np.array([[1.0, 1.0], [1.0, 0.0]])), [2.0, 1.0])


def test_zscore_treats_round_off_as_no_spread() -> None:
    """Identical inputs (the embedding layer of LoRA checkpoints) differ by round-off only:
    z = 0, not +-1 from a std of 1e-16."""
    from repcollapse.analyze.metrics.collapse import zscore

    flat = zscore(pd.Series([7.881556, 7.881556 * (1 + 4e-16), 7.881556, np.nan]))
    assert flat.iloc[:3].tolist() == [0.0, 0.0, 0.0] and np.isnan(flat.iloc[3])
    z = zscore(pd.Series([1.0, 2.0, 3.0]))
    assert z.tolist() == pytest.approx([-1.224744871, 0.0, 1.224744871])
