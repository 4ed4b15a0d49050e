"""Diversity and decorrelation penalties: exact against dense forms, and they move the gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_model import make_tiny_model, make_tokenizer

from repcollapse.train.mitigations import (
    DiversitySpec,
    RegularizedSFTTrainer,
    decorrelation_penalty,
    mean_pairwise_cosine,
    prior_subspaces,
    top_left_singular,
)


def test_mean_pairwise_cosine_matches_dense() -> None:
    torch.manual_seed(0)
    h = torch.randn(50, 16, dtype=torch.float64) + 3.0
    hc = h - h.mean(0)
    u = hc / hc.norm(dim=1, keepdim=True)
    g = u @ u.T
    n = h.shape[0]
    dense = (g.sum() - g.diagonal().sum()) / (n * (n - 1))
    assert torch.allclose(mean_pairwise_cosine(h), dense, atol=1e-12)
    assert -1.0 / (n - 1) - 1e-12 <= float(dense) <= 1.0


def test_top_left_singular_matches_dense_svd() -> None:
    torch.manual_seed(1)
    b, a = torch.randn(40, 6), torch.randn(6, 30)
    u = top_left_singular(a, b, 3)
    ud = torch.linalg.svd((b @ a).double())[0][:, :3].float()
    # same subspace: projector difference vanishes
    assert torch.allclose(u @ u.T, ud @ ud.T, atol=1e-4)


class _Lora(torch.nn.Module):
    """Just enough of a peft LoraLayer for the penalty (lora_A/lora_B ModuleDicts)."""

    def __init__(self, out: int, inp: int, r: int) -> None:
        super().__init__()
        self.lora_A = torch.nn.ModuleDict({"default": torch.nn.Linear(inp, r, bias=False)})
        self.lora_B = torch.nn.ModuleDict({"default": torch.nn.Linear(r, out, bias=False)})


def test_decorrelation_penalty_matches_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    import peft.tuners.lora as lora_mod

    monkeypatch.setattr(lora_mod, "LoraLayer", _Lora)
    torch.manual_seed(2)
    model = torch.nn.Module()
    model.q = _Lora(24, 20, 4)
    u = torch.linalg.qr(torch.randn(24, 5))[0]
    pen = decorrelation_penalty(model, {"q": u})
    dw = model.q.lora_B["default"].weight @ model.q.lora_A["default"].weight
    dense = (u.T @ dw).pow(2).sum() / dw.pow(2).sum()
    assert torch.allclose(pen, dense, atol=1e-6)
    assert 0.0 <= float(pen) <= 1.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny"), n_layers=2, hidden=32)


def _grads(
    tiny: Path, tmp: Path, *, diversity: DiversitySpec | None, decor: float, bases: dict | None
) -> dict[str, torch.Tensor]:
    from datasets import Dataset
    from trl import SFTConfig

    from repcollapse.train.config import LoraSettings
    from repcollapse.train.hf import load_model
    from repcollapse.train.pools import encode_sft
    from repcollapse.train.stages import lora_config

    tok = make_tokenizer()
    rows = [
        encode_sft(tok, f"compute {i} + 1", f"the answer is {i + 1} because {i}", 64)
        for i in range(8)
    ]
    model = load_model(tiny)
    args = SFTConfig(
        output_dir=str(tmp / "o"),
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        report_to="none",
        per_device_train_batch_size=8,
        seed=0,
        max_length=64,
    )
    tr = RegularizedSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        peft_config=lora_config(LoraSettings(rank=4, alpha=8, dropout=0.0)),
    )
    tr.rc_diversity, tr.rc_decorrelate_weight, tr.rc_bases = diversity, decor, bases
    torch.manual_seed(0)
    for name, p in tr.model.named_parameters():  # B starts at zero: give the update a direction
        if "lora_B" in name:
            p.data.normal_(0, 0.02)
    batch = tr.data_collator(rows)
    tr.model.train()
    loss = tr.compute_loss(tr.model, batch)
    loss.backward()
    return {n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_diversity_penalty_changes_gradients(tiny: Path, tmp_path: Path) -> None:
    g0 = _grads(tiny, tmp_path, diversity=DiversitySpec(0.0, (1, -1)), decor=0.0, bases=None)
    g0b = _grads(tiny, tmp_path, diversity=DiversitySpec(0.0, (1, -1)), decor=0.0, bases=None)
    g1 = _grads(tiny, tmp_path, diversity=DiversitySpec(1.0, (1, -1), 0.5), decor=0.0, bases=None)
    assert _max_diff(g0, g0b) == 0.0  # the comparison itself is deterministic
    assert _max_diff(g0, g1) > 1e-6


def test_decorrelation_penalty_changes_gradients(tiny: Path, tmp_path: Path) -> None:
    from peft import get_peft_model

    from repcollapse.train.config import LoraSettings
    from repcollapse.train.hf import load_model
    from repcollapse.train.stages import lora_config

    # an "earlier stage" adapter with non-zero B, saved in peft format
    torch.manual_seed(5)
    prev = get_peft_model(load_model(tiny), lora_config(LoraSettings(rank=4, alpha=8, dropout=0.0)))
    for name, p in prev.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.1)
    prev.save_pretrained(tmp_path / "prev")
    bases = prior_subspaces([tmp_path / "prev"], k=2)
    assert bases and all(u.shape[1] == 2 for u in bases.values())
    g0 = _grads(tiny, tmp_path, diversity=None, decor=0.0, bases=bases)
    g1 = _grads(tiny, tmp_path, diversity=None, decor=1.0, bases=bases)
    diff = _max_diff(g0, g1)
    assert diff > 1e-6
    # only adapter parameters carry gradients, and the penalty reaches both factors
    assert any("lora_A" in k and float((g0[k] - g1[k]).abs().max()) > 0 for k in g0)
    assert any("lora_B" in k and float((g0[k] - g1[k]).abs().max()) > 0 for k in g0)
