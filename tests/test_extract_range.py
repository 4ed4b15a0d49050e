"""Hidden states beyond float16 (|h| > 65504) are refused at write time, never stored as inf.

A tiny model whose block 1 MLP output is scaled up: the residual stream after that block (stored
layer 2) overflows float16 while the embeddings and the final-norm layer do not.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from test_extract_fixtures import make_tiny_checkpoint, write_probe

from repcollapse.cli.main import main
from repcollapse.extract.forward import FLOAT16_MAX, ChunkBuffer
from repcollapse.store_schema import StoreWriter, open_store
from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store


def _scaled_model(path: Path, factor: float) -> Path:
    from transformers import AutoModelForCausalLM

    make_tiny_checkpoint(path, n_layers=3)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.mul_(factor)
    model.save_pretrained(str(path))
    return path


def test_overflowing_model_is_refused_naming_checkpoint_layer_and_magnitude(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = _scaled_model(tmp_path / "base", 1e6)
    store = tmp_path / "exp.zarr"
    argv = ["extract", "--store", str(store), "--probe", str(write_probe(tmp_path / "p.jsonl"))]
    rc = main([*argv, "--batch-size", "4", "--token-chunk", "64", "--no-progress", str(ckpt)])
    out = capsys.readouterr()
    text = out.out + out.err
    assert rc == 1, text
    assert "Traceback" not in text
    m = re.search(
        r"checkpoint 'base': hidden states do not fit float16.*max \|h\| (\S+) in layer (\d+)", text
    )
    assert m, text
    assert float(m.group(1)) > FLOAT16_MAX and m.group(2) == "2"
    # Nothing a reader sees: the slot is not complete, and no inf was written.
    assert open_store(store).sizes["checkpoint"] == 0
    hidden = np.asarray(zarr.open_group(str(store), mode="r")["hidden"][:])
    assert np.isinf(hidden).sum() == 0


def test_the_same_model_unscaled_extracts(tmp_path: Path) -> None:
    """The control: the check does not fire on an ordinary model (max |h| far below 65504)."""
    ckpt = _scaled_model(tmp_path / "base", 1.0)
    store = tmp_path / "exp.zarr"
    argv = ["extract", "--store", str(store), "--probe", str(write_probe(tmp_path / "p.jsonl"))]
    assert (
        main([*argv, "--batch-size", "4", "--token-chunk", "64", "--no-progress", str(ckpt)]) == 0
    )
    assert open_store(store).sizes["checkpoint"] == 1


@pytest.mark.parametrize(
    ("max_abs", "expect"),
    [
        (
            [1.0, 7e4, 9e4, 1.0],
            "'A/01-stage': hidden states do not fit float16 (at most 65504): found max |h| 90000 in layer 2",
        ),
        ([1.0, np.nan, 9e4, 1.0], "found NaN in layer 1"),
        ([np.inf, 1.0, 1.0, 1.0], "max |h| inf in layer 0"),
    ],
)
def test_check_range_message(max_abs: list[float], expect: str, tmp_path: Path) -> None:
    make_synthetic_store(tmp_path / "s.zarr", SyntheticSpec(n_checkpoints=2, n_tokens=40))
    writer = StoreWriter(tmp_path / "s.zarr")
    buf = ChunkBuffer(writer, 1, n_layers=4, n_features=16, n_tokens=40, topk=5)
    with pytest.raises(ValueError, match=re.escape(expect)):
        buf.check_range(np.array(max_abs))
    buf.check_range(np.array([1.0, FLOAT16_MAX, 0.0, 2.0]))  # the largest float16 itself fits
