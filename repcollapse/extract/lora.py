"""The update a stage made, as LoRA factors per module and block: Delta W = scaling * B @ A.

* LoRA stage: the stage's own adapter (``adapter/``, peft format) is read directly with
  safetensors: ``adapter_config.json`` gives r and alpha (scaling alpha / r, or alpha / sqrt(r)
  with rsLoRA); ``adapter_model.safetensors`` gives A (r, in) and B (out, r) per module and block.
  Modules with their own rank or alpha (peft's rank_pattern / alpha_pattern) have their scaling
  ratio folded into B and their rank zero-padded, so one checkpoint scaling holds for all.
* Full fine-tuning: a rank-r truncated SVD of W - W_parent per module and block, in the same
  form (B = U_r S_r^1/2, A = S_r^1/2 V_r^T, scaling 1).
* Base checkpoint: nothing (rank 0).

Module names are the last path component of every ``nn.Linear`` in the first transformer block
(q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj for Llama).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class LoraFactors:
    rank: int
    scaling: float
    factors: dict[str, tuple[np.ndarray, np.ndarray]]
    """module -> (A (block, rank, in), B (block, out, rank)), float32, zero-padded to ``rank``."""


def transformer_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(qualified name, module list) of the model's transformer blocks."""
    n = int(model.config.num_hidden_layers)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return name, module
    raise ValueError(f"no nn.ModuleList of {n} blocks found in {type(model).__name__}")


def block_linears(model: nn.Module) -> dict[str, tuple[str, nn.Linear]]:
    """module key -> (path inside a block, first block's Linear)."""
    _, blocks = transformer_blocks(model)
    out: dict[str, tuple[str, nn.Linear]] = {}
    for path, module in blocks[0].named_modules():
        if isinstance(module, nn.Linear):
            key = path.rsplit(".", 1)[-1]
            if key in out:
                raise ValueError(
                    f"two Linear modules named {key!r} in one block: {out[key][0]}, {path}"
                )
            out[key] = (path, module)
    return out


def lora_module_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    """module key -> (in_features, out_features) of every Linear in the first block."""
    return {k: (m.in_features, m.out_features) for k, (_, m) in block_linears(model).items()}


def _weight_names(model: nn.Module) -> dict[str, tuple[int, str]]:
    """Qualified module name (no '.weight') -> (block index, module key), for every block."""
    list_name, blocks = transformer_blocks(model)
    paths = {k: p for k, (p, _) in block_linears(model).items()}
    return {f"{list_name}.{i}.{p}": (i, k) for i in range(len(blocks)) for k, p in paths.items()}


def _pattern_value(pattern: dict[str, Any], module_name: str, default: float) -> float:
    # Same matching rule as peft's get_pattern_key: the key matches a suffix of the module name.
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?{key}$", module_name):
            return float(value)
    return default


def read_adapter(adapter_dir: str | Path, model: nn.Module) -> LoraFactors:
    """Factors of a peft LoRA adapter directory, laid out per module and block of ``model``."""
    from safetensors.numpy import load_file

    adapter_dir = Path(adapter_dir)
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    if cfg.get("use_dora") or cfg.get("peft_type", "LORA") != "LORA":
        raise ValueError(
            f"{adapter_dir}: expected a plain LoRA adapter (Delta W = scaling * B @ A), found "
            f"peft_type={cfg.get('peft_type')!r}, use_dora={cfg.get('use_dora')!r}"
        )
    r, alpha = int(cfg["r"]), float(cfg.get("lora_alpha", cfg["r"]))
    rslora = bool(cfg.get("use_rslora", False))

    def scaling_of(rank: float, a: float) -> float:
        return a / math.sqrt(rank) if rslora else a / rank

    scaling = scaling_of(r, alpha)
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    names = _weight_names(model)
    shapes = lora_module_shapes(model)
    n_blocks = len(transformer_blocks(model)[1])
    found: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    ignored = []
    key_re = re.compile(
        r"^(?:base_model\.model\.)?(?P<path>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$"
    )
    for key, value in tensors.items():
        m = key_re.match(key)
        slot = names.get(m.group("path")) if m else None
        if slot is None:
            ignored.append(key)
            continue
        found.setdefault(slot, {})[m.group("ab")] = value.astype(np.float32)
    if ignored:
        warnings.warn(
            f"adapter {adapter_dir}: ignored tensors outside the blocks' Linear modules: {ignored[:5]}",
            stacklevel=2,
        )
    rank = max([r] + [ab["A"].shape[0] for ab in found.values() if "A" in ab])
    factors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for module, (fin, fout) in shapes.items():
        a = np.zeros((n_blocks, rank, fin), np.float32)
        b = np.zeros((n_blocks, fout, rank), np.float32)
        for block in range(n_blocks):
            ab = found.get((block, module))
            if not ab or "A" not in ab or "B" not in ab:
                continue
            rm = ab["A"].shape[0]
            name = next(n for n, s in names.items() if s == (block, module))
            own = scaling_of(
                _pattern_value(cfg.get("rank_pattern") or {}, name, r),
                _pattern_value(cfg.get("alpha_pattern") or {}, name, alpha),
            )
            a[block, :rm] = ab["A"]
            b[block, :, :rm] = ab["B"] * (own / scaling)
        factors[module] = (a, b)
    return LoraFactors(rank, scaling, factors)


def _load_tensors(model_dir: Path, names: list[str]) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = {n: model_dir / weight_map[n] for n in names}
    else:
        files = dict.fromkeys(names, model_dir / "model.safetensors")
    out: dict[str, torch.Tensor] = {}
    for path in sorted(set(files.values())):
        with safe_open(str(path), framework="pt") as fh:
            for n in names:
                if files[n] == path:
                    out[n] = fh.get_tensor(n)
    return out


def full_delta_factors(model: nn.Module, parent_dir: str | Path, rank: int) -> LoraFactors:
    """Rank-``rank`` truncated SVD of (W - W_parent) per module and block; scaling 1."""
    names = _weight_names(model)
    params = dict(model.named_parameters())
    parent = _load_tensors(Path(parent_dir), [f"{n}.weight" for n in names])
    shapes = lora_module_shapes(model)
    n_blocks = len(transformer_blocks(model)[1])
    factors = {
        m: (
            np.zeros((n_blocks, rank, fin), np.float32),
            np.zeros((n_blocks, fout, rank), np.float32),
        )
        for m, (fin, fout) in shapes.items()
    }
    for name, (block, module) in names.items():
        w = params[f"{name}.weight"].detach().float().cpu()
        delta = (w - parent[f"{name}.weight"].float()).double()
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        k = min(rank, s.shape[0])
        root = s[:k].sqrt()
        a, b = factors[module]
        a[block, :k] = (root[:, None] * vh[:k]).float().numpy()
        b[block, :, :k] = (u[:, :k] * root[None, :]).float().numpy()
    return LoraFactors(rank, 1.0, factors)
