"""End to end through the CLI: a base -> LoRA -> full chain into one store, and what is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_extract_fixtures import (
    make_full_stage,
    make_lora_stage,
    make_tiny_checkpoint,
    probe_records,
    write_probe,
)

from repcollapse.cli.main import main
from repcollapse.extract.run import ExtractConfig, extract
from repcollapse.store_schema import SchemaError, open_store
from repcollapse.store_schema.schema import GENERATED_INDEX_ATTR, generated_group
from repcollapse.store_schema.validate import validate_store


def snapshot(store: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("chain")
    base = make_tiny_checkpoint(root / "base")
    sft, deltas = make_lora_stage(base, root / "sft")
    full = make_full_stage(sft, root / "full")
    probe = write_probe(root / "probe.jsonl")
    store = root / "exp.zarr"
    argv = [
        "extract",
        "--store",
        str(store),
        "--probe",
        str(probe),
        "--batch-size",
        "4",
        "--token-chunk",
        "128",
        "--no-progress",
        str(base),
        str(sft),
        str(full),
    ]
    assert main(argv) == 0
    return {
        "root": root,
        "base": base,
        "sft": sft,
        "full": full,
        "probe": probe,
        "store": store,
        "deltas": deltas,
    }


def test_store_is_valid(chain: dict, capsys: pytest.CaptureFixture) -> None:
    problems, summary = validate_store(chain["store"])
    assert problems == [], problems
    assert "3 complete checkpoint(s), 3 layers" in summary
    assert main(["store", "validate", str(chain["store"])]) == 0
    assert "valid" in capsys.readouterr().out


def test_checkpoint_coords_and_attrs(chain: dict) -> None:
    ds = open_store(chain["store"])
    assert list(ds["checkpoint"].values) == ["base", "A/01-math", "A/02-full"]
    assert list(ds["stage_kind"].values) == ["base", "sft", "full"]
    assert list(ds["parent"].values) == ["", "base", "A/01-math"]
    assert list(ds["lora_rank"].values) == [0, 4, 64]
    np.testing.assert_allclose(ds["lora_scaling"].values, [0.0, 2.0, 1.0])
    assert list(ds["head"].values) == [0, 0, 0]  # lm_head unchanged: stored once
    assert ds.sizes["head"] == 1
    assert ds["behavior__target_score"].values[1] == pytest.approx(0.5)
    assert np.isnan(ds["behavior__target_score"].values[0])
    assert json.loads(str(ds["manifest_json"].values[1]))["adapter_dir"] == "adapter"
    attrs = ds.attrs
    assert attrs["model_family"] == "tiny-llama" and attrs["model_id"] == "tiny-llama"
    assert len(attrs["probe_hash"]) == 64 and len(attrs["tokenizer"]["vocab_sha256"]) == 64
    assert attrs["extraction_config"]["batch_size"] == 4
    assert attrs["code_version"].startswith("0.")
    assert set(attrs["lora_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert [e["checkpoint"] for e in attrs["extraction_log"]] == ["base", "A/01-math", "A/02-full"]


def test_lora_factors_round_trip_through_store(chain: dict) -> None:
    ds = open_store(chain["store"]).sel(checkpoint="A/01-math")
    scaling = float(ds["lora_scaling"].values)
    for name, delta in chain["deltas"].items():
        block = int(name.split(".layers.")[1].split(".")[0])
        module = name.rsplit(".", 1)[-1]
        a = ds[f"lora_A__{module}"].values[block]
        b = ds[f"lora_B__{module}"].values[block]
        np.testing.assert_allclose(scaling * b @ a, delta.numpy(), rtol=1e-5, atol=1e-6)


def test_full_stage_delta_through_store(chain: dict) -> None:
    from safetensors.torch import load_file

    ds = open_store(chain["store"]).sel(checkpoint="A/02-full")
    w = load_file(str(chain["full"] / "model.safetensors"))
    wp = load_file(str(chain["sft"] / "model.safetensors"))
    key = "model.layers.1.mlp.up_proj.weight"
    delta = (w[key] - wp[key]).double().numpy()
    recon = ds["lora_B__up_proj"].values[1].astype(np.float64) @ ds["lora_A__up_proj"].values[1]
    np.testing.assert_allclose(recon, delta, atol=1e-5)


def test_complete_checkpoints_are_skipped(chain: dict) -> None:
    before = snapshot(chain["store"])
    cfg = ExtractConfig(batch_size=2, token_chunk=128, progress=False)
    results = extract(chain["store"], chain["probe"], [chain["base"], chain["sft"]], cfg)
    assert [r.status for r in results] == ["skipped", "skipped"]
    assert snapshot(chain["store"]) == before


def _refused(chain: dict, probe: Path, ckpt: Path, match: str) -> str:
    before = snapshot(chain["store"])
    with pytest.raises(SchemaError, match=match) as err:
        extract(chain["store"], probe, [ckpt], ExtractConfig(token_chunk=128, progress=False))
    assert snapshot(chain["store"]) == before  # nothing written
    return str(err.value)


def test_refuses_other_probe_corpus(chain: dict, tmp_path: Path) -> None:
    records = probe_records()
    records[0]["reference"] += " Changed."
    probe = write_probe(tmp_path / "other.jsonl", records)
    message = _refused(chain, probe, chain["base"], "probe_hash")
    stored = open_store(chain["store"]).attrs["probe_hash"]
    assert stored in message  # names both values


def test_refuses_other_tokenizer(chain: dict, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    other = tmp_path / "other_tok"
    shutil.copytree(chain["base"], other)
    tok = AutoTokenizer.from_pretrained(str(other))
    tok.add_tokens(["<extra_token>"])
    tok.save_pretrained(str(other))
    _refused(chain, chain["probe"], other, "vocab_sha256")


def test_refuses_other_hidden_size(chain: dict, tmp_path: Path) -> None:
    wide = make_tiny_checkpoint(tmp_path / "wide", hidden=48, name="wide")
    message = _refused(chain, chain["probe"], wide, "hidden: feature")
    assert "store has 32" in message and "has 48" in message


def test_refuses_checkpoint_without_manifest(tmp_path: Path) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "half", manifest=False)
    probe = write_probe(tmp_path / "probe.jsonl")
    with pytest.raises(SchemaError, match="incomplete"):
        extract(tmp_path / "s.zarr", probe, [ckpt], ExtractConfig(progress=False))
    assert not (tmp_path / "s.zarr").exists()
    argv = ["extract", "--store", str(tmp_path / "s.zarr"), "--probe", str(probe), str(ckpt)]
    assert main(argv) == 1


def test_generate(chain: dict, tmp_path: Path) -> None:
    store = tmp_path / "gen.zarr"
    cfg = ExtractConfig(token_chunk=128, generate=2, gen_max_new_tokens=8, progress=False)
    results = extract(store, chain["probe"], [chain["base"], chain["sft"]], cfg)
    assert [r.generated for r in results] == [generated_group("base"), "generated/A__01-math"]
    assert validate_store(store)[0] == []
    import zarr

    listed = dict(zarr.open_group(str(store), mode="r")["generated"].attrs[GENERATED_INDEX_ATTR])
    assert listed == {"base": "generated/base", "A/01-math": "generated/A__01-math"}
    gen = open_store(store, group="generated/A__01-math")
    assert list(gen["checkpoint"].values) == ["A/01-math"]
    completions = gen.attrs["completions"]
    assert len(completions) == 2 * len(probe_records())
    assert set(gen["span"].values) == {"prompt", "response"}
    n_resp = (gen["span"].values == "response").sum()
    assert n_resp == sum(c["n_tokens"] for c in completions)
    assert gen["example"].values[0].endswith("/s0")
    # Root store unchanged by generation: same tokens as the chain's store.
    root = open_store(store)
    np.testing.assert_array_equal(
        root["token_id"].values, open_store(chain["store"])["token_id"].values
    )
    # Complete generated stores are skipped on a re-run.
    again = extract(store, chain["probe"], [chain["base"]], cfg)
    assert again[0].status == "skipped"


def test_device_flag_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="device"):
        ExtractConfig(device="tpu")
    assert torch.device("cpu").type == "cpu"
