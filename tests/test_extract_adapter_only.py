"""Adapter-only checkpoints (manifest weights 'adapter'): extracted as their merged twins."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_extract_fixtures import make_lora_stage, make_tiny_checkpoint, write_probe

from repcollapse.extract.run import ExtractConfig, extract
from repcollapse.store_schema import SchemaError, open_store


def adapter_only(merged: Path, out: Path, **manifest: object) -> Path:
    """``merged``'s adapter and manifest (weights 'adapter'), no weights and no tokenizer."""
    out.mkdir(parents=True)
    shutil.copytree(merged / "adapter", out / "adapter")
    fields = json.loads((merged / "manifest.json").read_text())
    fields.update(weights="adapter", **manifest)
    (out / "manifest.json").write_text(json.dumps(fields))
    shutil.copy(merged / "behavior.json", out / "behavior.json")
    return out


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("adapter_only")
    base = make_tiny_checkpoint(root / "base")
    one, _ = make_lora_stage(base, root / "one", name="A/01-math", seed=1)
    two, _ = make_lora_stage(one, root / "two", name="A/02-more", seed=2)
    one_a = adapter_only(one, root / "one_a", resolved_config={"parent_dir": "../base"})
    # no parent_dir: the parent is found among the command's checkpoints by name
    two_a = adapter_only(two, root / "two_a", parent="A/01-math")
    probe = write_probe(root / "probe.jsonl")
    cfg = ExtractConfig(token_chunk=64, progress=False)
    extract(root / "merged.zarr", probe, [base, one, two], cfg)
    extract(root / "adapters.zarr", probe, [base, one_a, two_a], cfg)
    return {"root": root, "base": base, "one_a": one_a, "two_a": two_a, "probe": probe}


def test_adapter_chain_equals_merged_checkpoints(chains: dict) -> None:
    merged = open_store(chains["root"] / "merged.zarr")
    adapters = open_store(chains["root"] / "adapters.zarr")
    assert list(adapters.checkpoint.values) == ["base", "A/01-math", "A/02-more"]
    h_m, h_a = merged["hidden"].values, adapters["hidden"].values
    assert np.abs(h_m[2] - h_m[1]).max() > 0.01  # the second adapter changes the states
    # the same float32 merges as the merged twins were written with: the same bits
    np.testing.assert_array_equal(h_a, h_m)
    for var in ("logit_entropy", "lora_A__q_proj", "lora_B__down_proj"):
        np.testing.assert_array_equal(adapters[var].values, merged[var].values)


def test_adapter_only_without_parent_is_refused(chains: dict, tmp_path: Path) -> None:
    orphan = adapter_only(chains["one_a"], tmp_path / "orphan", resolved_config={})
    with pytest.raises(SchemaError, match="parent_dir"):
        extract(tmp_path / "s.zarr", chains["probe"], [orphan], ExtractConfig(progress=False))
    assert not (tmp_path / "s.zarr").exists()
