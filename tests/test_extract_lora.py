"""LoRA factors read from a peft adapter, and the truncated SVD of a full fine-tuning delta."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_extract_fixtures import make_full_stage, make_lora_stage, make_tiny_checkpoint

from repcollapse.extract.lora import full_delta_factors, lora_module_shapes, read_adapter


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("lora") / "base")


def _model(path: Path):  # noqa: ANN202
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)


def _check_round_trip(factors, deltas: dict[str, torch.Tensor]) -> None:  # noqa: ANN001
    assert len(deltas) == 2 * 7
    for name, delta in deltas.items():
        block = int(name.split(".layers.")[1].split(".")[0])
        module = name.rsplit(".", 1)[-1]
        a, b = factors.factors[module]
        ours = factors.scaling * b[block] @ a[block]
        np.testing.assert_allclose(ours, delta.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_adapter_round_trip(base: Path, tmp_path: Path) -> None:
    stage, deltas = make_lora_stage(base, tmp_path / "sft", r=4, lora_alpha=8)
    model = _model(base)
    factors = read_adapter(stage / "adapter", model)
    assert factors.rank == 4 and factors.scaling == 2.0
    assert set(factors.factors) == set(lora_module_shapes(model))
    a, b = factors.factors["down_proj"]
    assert a.shape == (2, 4, 64) and b.shape == (2, 32, 4)
    _check_round_trip(factors, deltas)


def test_adapter_rslora_and_patterns(base: Path, tmp_path: Path) -> None:
    stage, deltas = make_lora_stage(
        base,
        tmp_path / "sft",
        r=4,
        lora_alpha=8,
        use_rslora=True,
        rank_pattern={"v_proj": 2},
        alpha_pattern={"o_proj": 3},
    )
    factors = read_adapter(stage / "adapter", _model(base))
    assert factors.rank == 4 and factors.scaling == pytest.approx(8 / 2)
    a, _ = factors.factors["v_proj"]
    assert not a[:, 2:].any()  # rank 2 module, zero-padded
    _check_round_trip(factors, deltas)


def test_module_shapes(base: Path) -> None:
    shapes = lora_module_shapes(_model(base))
    assert shapes == {
        "q_proj": (32, 32),
        "k_proj": (32, 16),
        "v_proj": (32, 16),
        "o_proj": (32, 32),
        "gate_proj": (32, 64),
        "up_proj": (32, 64),
        "down_proj": (64, 32),
    }


@pytest.mark.parametrize("rank", [64, 3])
def test_full_finetune_delta_svd(base: Path, tmp_path: Path, rank: int) -> None:
    full = make_full_stage(base, tmp_path / "full")
    model, parent = _model(full), _model(base)
    factors = full_delta_factors(model, base, rank)
    assert factors.scaling == 1.0 and factors.rank == rank
    params, pparams = dict(model.named_parameters()), dict(parent.named_parameters())
    for block in range(2):
        for module, path in (("q_proj", "self_attn.q_proj"), ("down_proj", "mlp.down_proj")):
            key = f"model.layers.{block}.{path}.weight"
            delta = (params[key] - pparams[key]).detach().double().numpy()
            a, b = factors.factors[module]
            ours = b[block].astype(np.float64) @ a[block]
            if rank >= min(delta.shape):
                np.testing.assert_allclose(ours, delta, atol=1e-5)
            else:  # the best rank-r approximation (Eckart-Young)
                u, s, vh = np.linalg.svd(delta, full_matrices=False)
                best = (u[:, :rank] * s[:rank]) @ vh[:rank]
                np.testing.assert_allclose(ours, best, atol=1e-5)
