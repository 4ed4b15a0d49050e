"""The forward runs each example only up to its last stored token, batched by length.

Reference: the plain schedule (whole sequences, consecutive batches in store order), which is
what extraction ran before. The stored values must agree, the next-token target of the last
kept token must survive the cut, and the cut must actually shorten the forward: the probe's
references get an unlabelled tail (span ``response``) of which a token cap of 2 per
(domain, span) stores at most 2 tokens a domain, so most tails are cut.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from test_extract_fixtures import make_tiny_checkpoint, probe_records, write_probe

from repcollapse.extract import forward
from repcollapse.extract.run import ExtractConfig, extract
from repcollapse.extract.tokens import TokenizedExample, build_plan
from repcollapse.store_schema import open_store
from repcollapse.store_schema.records import read_probe_jsonl
from repcollapse.store_schema.testing import _logit_stats

CAP = 2
COORDS = ("example", "domain", "span", "position", "token_id", "target_id", "split", "is_sink")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cut")
    ckpt = make_tiny_checkpoint(root / "base")
    records = probe_records()
    for rec in records:
        rec["reference"] += " And then more words follow here." * 5  # outside every span
    probe = write_probe(root / "probe.jsonl", records)
    cfg = ExtractConfig(batch_size=3, token_cap_per_span=CAP, token_chunk=64, progress=False)
    extract(root / "cut.zarr", probe, [ckpt], cfg)
    plain = functools.partial(forward.iterate_outputs, cut=False, by_length=False)
    with pytest.MonkeyPatch.context() as mp:
        # write_checkpoint imports iterate_outputs from the module at call time
        mp.setattr(forward, "iterate_outputs", plain)
        extract(root / "plain.zarr", probe, [ckpt], cfg)
    return {"ckpt": ckpt, "probe": probe, "cut": root / "cut.zarr", "plain": root / "plain.zarr"}


def _plan(setup: dict[str, Path]) -> list[TokenizedExample]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(setup["ckpt"]))
    recs = read_probe_jsonl(setup["probe"])
    return build_plan(tok, recs, max_length=512, token_cap_per_span=CAP, seed=0).examples


def test_the_cut_shortens_the_forward(setup: dict[str, Path]) -> None:
    examples = _plan(setup)
    full = sum(len(ex.input_ids) for ex in examples)
    cut = sum(ex.run_length for ex in examples)
    assert cut < 0.7 * full, (cut, full)  # else the comparison below proves nothing
    assert all(ex.run_length == ex.keep[-1] + 1 for ex in examples)
    ids, mask, _ = forward.pad_batch(examples[:3], 0, torch.device("cpu"))
    assert ids.shape[1] == max(ex.run_length for ex in examples[:3])
    assert mask.sum(dim=1).tolist() == [ex.run_length for ex in examples[:3]]


def test_store_with_cut_equals_store_without(setup: dict[str, Path]) -> None:
    a = open_store(setup["cut"]).isel(checkpoint=0)
    b = open_store(setup["plain"]).isel(checkpoint=0)
    for name in COORDS:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    ha, hb = a["hidden"].values.astype(np.float32), b["hidden"].values.astype(np.float32)
    # float32 on CPU: padding to another length changes the GEMM blocking, so values may
    # differ in the last float32 bits, which float16 storage hides except at rounding ties:
    # at most one float16 ulp (2**-10 relative) apart.
    ulp = np.spacing(np.abs(hb).astype(np.float16)).astype(np.float32)
    assert (np.abs(ha - hb) <= ulp).all()
    for name in ("logit_entropy", "logit_top1_prob", "logit_target_logprob", "logit_margin"):
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-5, atol=1e-5)
    for name in ("logit_argmax_id", "logit_support_90"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_last_kept_token_keeps_its_target(setup: dict[str, Path]) -> None:
    """The token after the last kept one is not run, but it is still the last kept token's
    target: its log-probability is finite and equals a plain forward of the whole sequence."""
    from transformers import AutoModelForCausalLM

    examples = _plan(setup)
    ds = open_store(setup["cut"]).isel(checkpoint=0)
    model = AutoModelForCausalLM.from_pretrained(str(setup["ckpt"]), dtype=torch.float32).eval()
    cut_examples = [ex for ex in examples if ex.run_length < len(ex.input_ids)]
    assert len(cut_examples) >= 10
    for ex in cut_examples:
        sel = ds["example"].values == ex.id
        last = int(ex.keep[-1])
        assert int(ds["position"].values[sel][-1]) == last
        assert int(ds["target_id"].values[sel][-1]) == int(ex.input_ids[last + 1])
        stored_lp = float(ds["logit_target_logprob"].values[sel][-1])
        assert np.isfinite(stored_lp)
        with torch.inference_mode():
            logits = model(torch.from_numpy(ex.input_ids)[None]).logits[0].double().numpy()
        ref = _logit_stats(logits[ex.keep], np.append(ex.input_ids[1:], -1)[ex.keep], 20)
        np.testing.assert_allclose(
            ds["logit_target_logprob"].values[sel], ref["logit_target_logprob"], atol=1e-4
        )
        np.testing.assert_array_equal(ds["logit_argmax_id"].values[sel], ref["logit_argmax_id"])


def _example(n: int, keep: list[int], i: int = 0) -> TokenizedExample:
    return TokenizedExample(
        f"e{i}", "general", "fit", np.arange(n), np.full(n, "prompt"), np.array(keep, np.int64)
    )


def test_windows_cover_store_order_and_sort_by_cut_length() -> None:
    lengths = [(10, [9]), (10, [1]), (30, [2, 3]), (5, [0, 4]), (8, [7]), (20, [0])]
    examples = [_example(n, k, i) for i, (n, k) in enumerate(lengths)]
    windows = forward.plan_windows(examples, 2, window_tokens=3)
    # consecutive ranges of whole examples, each holding >= 3 stored tokens but the last
    assert [list(r) for r, _ in windows] == [[0, 1, 2], [3, 4], [5]]
    # sorted by run length 10, 2, 4 -> 2, 4, 10 inside the first window
    assert windows[0][1] == [[1, 2], [0]]
    assert windows[1][1] == [[3, 4]]
    plain = forward.plan_windows(examples, 2, window_tokens=3, cut=False, by_length=False)
    assert [b for _, bs in plain for b in bs] == [[0, 1], [2], [3, 4], [5]]
    with pytest.raises(ValueError, match="window_tokens"):
        forward.plan_windows(examples, 2, window_tokens=0)


def test_outputs_come_back_in_store_order() -> None:
    """A fake model whose hidden state is the token id: the reassembled window must list
    the kept tokens in store order whatever order the batches ran in."""

    class Fake(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base_model = self

        def forward(self, input_ids, **_):  # noqa: ANN001, ANN003, ANN202
            h = input_ids.float()[..., None].expand(-1, -1, 4)
            out = type("O", (), {})()
            out.hidden_states, out.last_hidden_state = (h, h), h
            return out

    def stats(last, target):  # noqa: ANN001, ANN202
        return {"target": target.numpy().copy()}

    rng = np.random.default_rng(0)
    examples = []
    for i in range(11):
        n = int(rng.integers(3, 40))
        keep = np.sort(rng.choice(n, size=int(rng.integers(1, n)), replace=False))
        ex = _example(n, list(keep), i)
        examples.append(
            TokenizedExample(ex.id, ex.domain, ex.split, 100 * i + np.arange(n), ex.spans, ex.keep)
        )
    got = [
        out
        for _, out in forward.iterate_outputs(
            Fake(),
            examples,
            batch_size=3,
            pad_id=0,
            device=torch.device("cpu"),
            stats=stats,  # type: ignore[arg-type]
            window_tokens=20,
        )
    ]
    hidden = np.concatenate([o.hidden[0, :, 0] for o in got]).astype(np.int64)
    want = np.concatenate([ex.input_ids[ex.keep] for ex in examples])
    np.testing.assert_array_equal(hidden, want)
    targets = np.concatenate([o.stats["target"] for o in got])
    want_t = np.concatenate([np.append(ex.input_ids[1:], -1)[ex.keep] for ex in examples])
    np.testing.assert_array_equal(targets, want_t)
