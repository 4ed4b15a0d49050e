"""Stored hidden states and logit statistics against a plain transformers forward."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_extract_fixtures import make_tiny_checkpoint, write_probe

from repcollapse.extract.run import ExtractConfig, extract
from repcollapse.store_schema import open_store
from repcollapse.store_schema.testing import _logit_stats


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fwd")
    ckpt = make_tiny_checkpoint(root / "base")
    probe = write_probe(root / "probe.jsonl")
    stores = {}
    for batch in (1, 8):
        stores[batch] = root / f"b{batch}.zarr"
        cfg = ExtractConfig(batch_size=batch, token_chunk=128, progress=False)
        extract(stores[batch], probe, [ckpt], cfg)
    sync = root / "sync.zarr"
    extract(
        sync,
        probe,
        [ckpt],
        ExtractConfig(batch_size=8, token_chunk=128, progress=False, write_behind=False),
    )
    return {"ckpt": ckpt, "probe": probe, "b1": stores[1], "b8": stores[8], "sync": sync}


def _plain_forward(ckpt: Path, ids: np.ndarray):  # noqa: ANN202
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32).eval()
    with torch.inference_mode():
        out = model(torch.from_numpy(ids)[None], output_hidden_states=True)
    return model, out


def test_hidden_states_equal_plain_forward(setup: dict[str, Path]) -> None:
    ds = open_store(setup["b8"]).isel(checkpoint=0)
    examples = list(dict.fromkeys(ds["example"].values))
    for ex in (examples[0], examples[5], examples[-1]):
        sel = ds["example"].values == ex
        ids = ds["token_id"].values[sel].astype(np.int64)
        assert np.array_equal(ds["position"].values[sel], np.arange(len(ids)))
        model, out = _plain_forward(setup["ckpt"], ids)
        stored = ds["hidden"].values[:, sel]  # (layer, n, d) float16
        assert stored.shape[0] == len(out.hidden_states) == model.config.num_hidden_layers + 1
        for layer, h in enumerate(out.hidden_states):
            ref = h[0].numpy()
            np.testing.assert_allclose(
                stored[layer].astype(np.float32), ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max()
            )
        # The last stored layer is after the final norm: it reproduces the logits.
        w = model.lm_head.weight.detach().numpy()
        logits = out.logits[0].numpy()
        recomputed = stored[-1].astype(np.float32) @ w.T
        np.testing.assert_allclose(recomputed, logits, atol=5e-3 * np.abs(logits).max())
        # ... and the stored unembedding is lm_head in float16
        head = int(ds["head"].values)
        np.testing.assert_array_equal(ds["unembedding"].values[head], w.astype(np.float16))


def test_logit_stats_match_reference(setup: dict[str, Path]) -> None:
    ds = open_store(setup["b8"]).isel(checkpoint=0)
    ex = ds["example"].values[0]
    sel = ds["example"].values == ex
    ids = ds["token_id"].values[sel].astype(np.int64)
    _, out = _plain_forward(setup["ckpt"], ids)
    ref = _logit_stats(out.logits[0].double().numpy(), ds["target_id"].values[sel], 20)
    for name in ("logit_entropy", "logit_top1_prob", "logit_target_logprob", "logit_margin"):
        np.testing.assert_allclose(ds[name].values[sel], ref[name], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(ds["logit_argmax_id"].values[sel], ref["logit_argmax_id"])
    np.testing.assert_array_equal(ds["logit_support_90"].values[sel], ref["logit_support_90"])
    np.testing.assert_array_equal(ds["topk_ids"].values[sel][:, :5], ref["topk_ids"][:, :5])


def test_batch_size_does_not_change_results(setup: dict[str, Path]) -> None:
    a = open_store(setup["b1"]).isel(checkpoint=0)
    b = open_store(setup["b8"]).isel(checkpoint=0)
    ha, hb = a["hidden"].values.astype(np.float32), b["hidden"].values.astype(np.float32)
    scale = np.abs(ha).max(axis=(1, 2), keepdims=True)
    assert np.abs(ha - hb).max() <= 1e-3 * scale.max()
    assert (np.abs(ha - hb) <= 2e-3 * np.abs(ha) + 1e-3 * scale).all()
    for name in ("logit_entropy", "logit_top1_prob", "logit_target_logprob"):
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-4, atol=1e-4)
    assert (a["logit_argmax_id"].values == b["logit_argmax_id"].values).mean() > 0.99
    for name in ("example", "span", "position", "token_id", "target_id", "split", "is_sink"):
        np.testing.assert_array_equal(a[name].values, b[name].values)


def test_write_behind_thread_writes_the_same_store(setup: dict[str, Path]) -> None:
    import zarr

    a = zarr.open_group(str(setup["b8"]), mode="r")
    b = zarr.open_group(str(setup["sync"]), mode="r")
    assert a.attrs["token_chunk"] == 126  # 880 tokens in 7 balanced chunks of <= 128
    for name, arr in a.arrays():
        np.testing.assert_array_equal(arr[...], b[name][...], err_msg=name)
