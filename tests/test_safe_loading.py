"""Model loading is safetensors only and never runs a checkpoint's own code.

A static check that every transformers ``Auto*.from_pretrained`` / ``from_config`` call in train
and extract passes ``trust_remote_code=False`` (and ``use_safetensors=True`` for weights that are
not the embedded GGUF), then the behaviour: a pickle-only adapter is refused before a store
exists, and a config whose ``auto_map`` names custom code of a model type transformers ships
loads the shipped class without importing that code.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from test_extract_fixtures import make_lora_stage, make_tiny_checkpoint, write_probe

from repcollapse.extract.run import ExtractConfig, extract
from repcollapse.store_schema.problems import SchemaError

REPO = Path(__file__).resolve().parents[1]


def _loading_calls() -> list[tuple[str, ast.Call, str]]:
    calls = []
    for folder in ("train", "extract"):
        for path in sorted((REPO / "repcollapse" / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("from_pretrained", "from_config")
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id.startswith("Auto")
                ):
                    where = f"{path.relative_to(REPO)}:{node.lineno}"
                    calls.append((where, node, node.func.value.id))
    return calls


def _kw(call: ast.Call, name: str) -> object:
    for k in call.keywords:
        if k.arg == name and isinstance(k.value, ast.Constant):
            return k.value.value
    return None


def test_every_transformers_load_refuses_remote_code_and_pickle() -> None:
    calls = _loading_calls()
    assert len(calls) >= 8  # extract: config, tokenizer, meta model, model; train: 4+ loads
    for where, call, cls in calls:
        assert _kw(call, "trust_remote_code") is False, f"{where}: trust_remote_code=False missing"
        weights = cls.startswith("AutoModel") and call.func.attr == "from_pretrained"  # type: ignore[union-attr]
        if (
            weights
            and _kw(call, "gguf_file") is None
            and not any(k.arg == "gguf_file" for k in call.keywords)
        ):
            assert _kw(call, "use_safetensors") is True, f"{where}: use_safetensors=True missing"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("safe")
    base = make_tiny_checkpoint(root / "base")
    sft, _ = make_lora_stage(base, root / "sft")
    return {"root": root, "base": base, "sft": sft, "probe": write_probe(root / "probe.jsonl")}


def test_pickle_only_adapter_is_refused_before_the_store(chain: dict[str, Path]) -> None:
    import shutil

    import torch
    from safetensors.torch import load_file

    sft = Path(shutil.copytree(chain["sft"], chain["root"] / "sft_pickle"))
    adapter = sft / "adapter"
    torch.save(load_file(adapter / "adapter_model.safetensors"), adapter / "adapter_model.bin")
    (adapter / "adapter_model.safetensors").unlink()
    store = chain["root"] / "pickle.zarr"
    with pytest.raises(SchemaError) as err:
        extract(store, chain["probe"], [chain["base"], sft], ExtractConfig(progress=False))
    assert [p.kind for p in err.value.problems] == ["pickle_weights"]
    assert str(adapter / "adapter_model.bin") in str(err.value)
    assert not store.exists() and not store.with_name("pickle.zarr.lock").exists()


def test_auto_map_of_a_shipped_model_type_runs_no_custom_code(chain: dict[str, Path]) -> None:
    import shutil

    ckpt = Path(shutil.copytree(chain["base"], chain["root"] / "base_auto_map"))
    marker = chain["root"] / "custom_code_ran"
    (ckpt / "configuration_custom.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import LlamaConfig as CustomConfig\n"
    )
    (ckpt / "modeling_custom.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import LlamaForCausalLM as CustomModel\n"
    )
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["auto_map"] = {
        "AutoConfig": "configuration_custom.CustomConfig",
        "AutoModelForCausalLM": "modeling_custom.CustomModel",
    }
    (ckpt / "config.json").write_text(json.dumps(cfg))
    store = chain["root"] / "auto_map.zarr"
    results = extract(store, chain["probe"], [ckpt], ExtractConfig(progress=False))
    assert [r.status for r in results] == ["extracted"]
    assert not marker.exists()
