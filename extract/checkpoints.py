"""Checkpoint directories: manifest, behaviour, model shape, weights and the stage's update.

A checkpoint directory (written by train) holds merged HF weights, the tokenizer,
``manifest.json`` (written last: without it the directory is an incomplete checkpoint and is
refused), optionally ``behavior.json`` and the stage's own LoRA adapter (``adapter/``, or the
manifest's ``adapter_dir``). A ``full`` stage's update is the SVD of its weight delta against
the parent's weights: the parent directory is ``resolved_config["parent_dir"]`` of the manifest
(absolute, or relative to the checkpoint), else the parent checkpoint given in the same command.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extract.store_io import Geometry
from store_schema.problems import Problem, SchemaError
from store_schema.records import CheckpointManifest, read_manifest


@dataclass(frozen=True)
class CheckpointSource:
    path: Path
    manifest: CheckpointManifest
    manifest_json: str
    behavior: dict[str, Any]


def read_checkpoint(path: str | Path) -> CheckpointSource:
    path = Path(path)
    manifest = read_manifest(path)  # refuses a directory without manifest.json
    behavior_path = path / "behavior.json"
    behavior = (
        json.loads(behavior_path.read_text(encoding="utf-8")) if behavior_path.is_file() else {}
    )
    if manifest.weights != "merged":
        raise SchemaError(
            [
                Problem(
                    str(path / "manifest.json"),
                    f"expected weights 'merged' (full weights in the directory), found {manifest.weights!r}; "
                    "merge the adapter into the weights first",
                    "unsupported_checkpoint",
                )
            ]
        )
    return CheckpointSource(
        path, manifest, json.dumps(manifest.to_dict(), sort_keys=True), behavior
    )


def model_geometry(config: Any) -> Geometry:
    """Store shape of a model, from its config (LoRA modules via a weightless meta model)."""
    import torch
    from transformers import AutoModelForCausalLM

    from extract.lora import lora_module_shapes

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return Geometry(
        n_layers=int(config.num_hidden_layers) + 1,
        n_features=int(config.hidden_size),
        vocab_size=int(model.get_output_embeddings().weight.shape[0]),
        n_blocks=int(config.num_hidden_layers),
        lora_modules=lora_module_shapes(model),
    )


def check_same_model(sources: Sequence[CheckpointSource], configs: Sequence[Any]) -> None:
    first = configs[0]
    problems = []
    for src, cfg in zip(sources[1:], configs[1:], strict=True):
        for key in ("num_hidden_layers", "hidden_size", "vocab_size", "model_type"):
            a, b = getattr(first, key, None), getattr(cfg, key, None)
            if a != b:
                problems.append(
                    Problem(
                        f"{src.path}/config.json {key}",
                        f"expected {a!r} (as {sources[0].path}), found {b!r}",
                        "model_mismatch",
                    )
                )
    if problems:
        raise SchemaError(problems, "one store holds checkpoints of one model family")


def load_model(path: Path, device: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    model.to(device)
    model.eval()
    return model


def update_factors(model: Any, src: CheckpointSource, by_name: dict[str, CheckpointSource]) -> Any:
    """LoRA factors of the stage (adapter, or SVD of the delta for a full stage), or None."""
    from extract.lora import full_delta_factors, read_adapter
    from extract.store_io import LORA_RANK_CAPACITY

    m = src.manifest
    adapter = src.path / (m.adapter_dir or "adapter")
    if m.stage_kind == "full":
        parent = m.resolved_config.get("parent_dir")
        parent_dir = Path(parent) if parent else None
        if (
            parent_dir is not None
            and not parent_dir.is_absolute()
            and (src.path / parent_dir).is_dir()
        ):
            parent_dir = src.path / parent_dir
        if parent_dir is None and m.parent in by_name:
            parent_dir = by_name[m.parent].path
        if parent_dir is None or not parent_dir.is_dir():
            raise FileNotFoundError(
                f"{src.path}: a full fine-tuning stage needs its parent's weights; expected "
                f"resolved_config['parent_dir'] or the parent checkpoint {m.parent!r} among the "
                f"checkpoints of this command, found {parent!r}"
            )
        rank = min(m.lora_rank or LORA_RANK_CAPACITY, LORA_RANK_CAPACITY)
        return full_delta_factors(model, parent_dir, rank)
    if (adapter / "adapter_config.json").is_file():
        return read_adapter(adapter, model)
    return None


def checkpoint_coords(src: CheckpointSource, lora: Any, head: int) -> dict[str, Any]:
    m = src.manifest
    return {
        "name": m.name,
        "sequence": m.sequence,
        "stage_index": m.stage_index,
        "stage_kind": m.stage_kind,
        "stage_domain": m.stage_domain,
        "parent": m.parent,
        "seed": m.seed,
        "tokens_seen": m.tokens_seen,
        "mitigation": m.mitigation,
        "lora_rank": lora.rank if lora else 0,
        "lora_scaling": lora.scaling if lora else 0.0,
        "head": head,
        "manifest_json": src.manifest_json,
        "behavior_json": json.dumps(src.behavior, sort_keys=True, default=str),
    }
