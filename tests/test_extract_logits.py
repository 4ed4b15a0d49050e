"""Logit statistics in torch against the numpy reference of repcollapse.store_schema.testing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repcollapse.extract.logits import SUPPORT_PROBE, hidden_logit_stats, logit_stats
from repcollapse.store_schema.testing import _logit_stats


def _logits(n: int = 96, vocab: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Peaked rows (support in the top-256 probe) and flat rows (support beyond it: fallback).
    scale = np.where(np.arange(n) % 3 == 0, 0.05, np.where(np.arange(n) % 3 == 1, 3.0, 12.0))
    logits = rng.normal(size=(n, vocab)) * scale[:, None]
    target = rng.integers(0, vocab, size=n)
    target[::7] = -1
    return logits.astype(np.float32), target


def _compare(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    assert set(ours) == set(ref)
    for name in ("logit_entropy", "logit_top1_prob", "logit_top2_prob"):
        np.testing.assert_allclose(ours[name], ref[name], rtol=2e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(ours["logit_margin"], ref["logit_margin"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        ours["logit_target_logprob"], ref["logit_target_logprob"], rtol=1e-5, atol=1e-5
    )
    for name in ("logit_support_90", "logit_argmax_id", "topk_ids"):
        np.testing.assert_array_equal(ours[name], ref[name], err_msg=name)
    np.testing.assert_allclose(
        ours["topk_logprobs"].astype(np.float32),
        ref["topk_logprobs"].astype(np.float32),
        rtol=1e-3,
        atol=1e-3,
    )
    for name, arr in ref.items():
        assert ours[name].dtype == arr.dtype, name


def test_logit_stats_match_numpy_reference() -> None:
    logits, target = _logits()
    ref = _logit_stats(logits.astype(np.float64), target, 20)
    out = logit_stats(torch.from_numpy(logits), torch.from_numpy(target), 20)
    ours = {k: v.numpy() for k, v in out.items()}
    ours = {k: v.astype(ref[k].dtype) for k, v in ours.items()}
    _compare(ours, ref)
    # both code paths of the support computation were exercised
    assert (ref["logit_support_90"] > SUPPORT_PROBE).any()
    assert (ref["logit_support_90"] <= SUPPORT_PROBE).any()
    assert np.isnan(ours["logit_target_logprob"][target < 0]).all()


@pytest.mark.parametrize("slice_size", [1, 7, 256])
def test_hidden_logit_stats_slices(slice_size: int) -> None:
    rng = np.random.default_rng(1)
    hidden = rng.normal(size=(50, 16)).astype(np.float32)
    weight = (rng.normal(size=(600, 16)) * 0.8).astype(np.float32)
    target = rng.integers(-1, 600, size=50)
    ref = _logit_stats((hidden @ weight.T).astype(np.float64), target, 20)
    ours = hidden_logit_stats(
        torch.from_numpy(hidden),
        torch.from_numpy(weight),
        torch.from_numpy(target),
        20,
        slice_size=slice_size,
    )
    _compare(ours, ref)


def test_softcap_applies_before_statistics() -> None:
    rng = np.random.default_rng(2)
    hidden = rng.normal(size=(10, 8)).astype(np.float32)
    weight = rng.normal(size=(64, 8)).astype(np.float32)
    target = rng.integers(0, 64, size=10)
    z = hidden.astype(np.float64) @ weight.T
    ref = _logit_stats(np.tanh(z / 4.0) * 4.0, target, 5)
    ours = hidden_logit_stats(
        torch.from_numpy(hidden),
        torch.from_numpy(weight),
        torch.from_numpy(target),
        5,
        softcap=4.0,
    )
    _compare(ours, ref)


def test_support_paths_and_peaked_rows() -> None:
    """Supports within the top-32 and far beyond it (candidate sort), near-zero entropies."""
    rng = np.random.default_rng(3)
    vocab = 6000
    scale = np.repeat([0.01, 0.6, 1.2, 2.5, 80.0], 6)
    logits = (rng.normal(size=(len(scale), vocab)) * scale[:, None]).astype(np.float32)
    target = rng.integers(0, vocab, size=len(scale))
    ref = _logit_stats(logits.astype(np.float64), target, 20)
    support = ref["logit_support_90"]
    assert (support <= 256).any() and ((support > 256) & (support <= 4096)).any()
    assert (support > 4096).any()
    out = logit_stats(torch.from_numpy(logits), torch.from_numpy(target), 20)
    ours = {k: v.numpy().astype(ref[k].dtype) for k, v in out.items()}
    _compare(ours, ref)
    peaked = ref["logit_entropy"] < 1e-3
    assert peaked.sum() >= 2
    np.testing.assert_allclose(
        ours["logit_entropy"][peaked], ref["logit_entropy"][peaked], rtol=1e-3, atol=1e-8
    )


def test_support_falls_back_to_a_full_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    import repcollapse.extract.logits as L

    monkeypatch.setattr(L, "SUPPORT_FLOOR", 200.0)  # candidates miss mass: every row falls back
    logits, target = _logits(n=30, vocab=1000, seed=4)
    ref = _logit_stats(logits.astype(np.float64), target, 20)
    out = logit_stats(torch.from_numpy(logits), torch.from_numpy(target), 20)
    np.testing.assert_array_equal(out["logit_support_90"].numpy(), ref["logit_support_90"])
