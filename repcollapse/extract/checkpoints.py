"""Checkpoint directories: manifest, behaviour, model shape, weights and the stage's update.

A checkpoint directory (written by train) holds merged HF weights, the tokenizer,
``manifest.json`` (written last: without it the directory is an incomplete checkpoint and is
refused), optionally ``behavior.json`` and the stage's own LoRA adapter (``adapter/``, or the
manifest's ``adapter_dir``). A ``full`` stage's update is the SVD of its weight delta against
the parent's weights: the parent directory is ``resolved_config["parent_dir"]`` of the manifest
(absolute, or relative to the checkpoint), else the parent checkpoint given in the same command.

An adapter-only checkpoint (manifest ``weights: "adapter"``, e.g. to keep a long chain in a few
MB per stage) holds its own adapter and no weights: its model is its parent's model (found the
same way, itself merged or adapter-only) with the adapter merged in, in float32 - the arithmetic
train uses to write a merged stage. Config and tokenizer come from the nearest merged ancestor
unless the directory has its own tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repcollapse.extract.store_io import Geometry
from repcollapse.store_schema.manifest import CheckpointManifest, read_manifest
from repcollapse.store_schema.problems import Problem, SchemaError
from repcollapse.store_schema.schema import TRAIN_LOSSES


@dataclass(frozen=True)
class CheckpointSource:
    path: Path
    manifest: CheckpointManifest
    manifest_json: str
    behavior: dict[str, Any]
    model_dir: Path
    """Directory of the weights the model starts from (``path`` unless adapter-only)."""
    adapters: tuple[Path, ...] = ()
    """Adapters merged into ``model_dir``'s weights, oldest first (adapter-only chains)."""

    @property
    def tokenizer_dir(self) -> Path:
        return self.path if (self.path / "tokenizer_config.json").is_file() else self.model_dir


def parent_dir(path: Path, manifest: CheckpointManifest, by_name: dict[str, Path]) -> Path | None:
    """The parent checkpoint's directory: ``resolved_config['parent_dir']`` (absolute or relative
    to the checkpoint), else the parent among the command's checkpoints; None if neither."""
    given = manifest.resolved_config.get("parent_dir")
    if given:
        for found in (path / given, Path(given)):  # path / an absolute path is that path
            if found.is_dir():
                return found
    return by_name.get(manifest.parent)


def train_losses(path: Path) -> list[float] | None:
    """The ``losses`` of ``path/train_log.json`` (docs/INTERFACES.md), None where the checkpoint
    has no such file (the base, a checkpoint trained before the log existed)."""
    log = path / "train_log.json"
    if not log.is_file():
        return None
    obj = json.loads(log.read_text(encoding="utf-8"))
    losses = obj.get("losses") if isinstance(obj, dict) else obj
    ok = isinstance(losses, list) and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in losses
    )
    if not ok:
        raise ValueError(
            f"{log}: expected 'losses' to be a list of numbers (one per optimizer step), "
            f"found {str(losses)[:80]!r}"
        )
    return [float(x) for x in losses]


def read_checkpoint(
    path: str | Path, by_name: dict[str, Path] | None = None, _seen: tuple[Path, ...] = ()
) -> CheckpointSource:
    """A checkpoint directory; an adapter-only one resolved down to a merged ancestor.
    ``by_name``: directories of the command's other checkpoints, by manifest name."""
    path = Path(path)
    manifest = read_manifest(path)  # refuses a directory without manifest.json
    behavior_path = path / "behavior.json"
    behavior = (
        json.loads(behavior_path.read_text(encoding="utf-8")) if behavior_path.is_file() else {}
    )
    losses = train_losses(path)
    if losses is not None:  # the loss history travels with the behaviour into the store
        behavior = {**behavior, TRAIN_LOSSES: losses}
    manifest_json = json.dumps(manifest.to_dict(), sort_keys=True)
    if manifest.weights == "merged":
        return CheckpointSource(path, manifest, manifest_json, behavior, model_dir=path)
    adapter = path / (manifest.adapter_dir or "adapter")
    parent = parent_dir(path, manifest, by_name or {})
    where = str(path / "manifest.json")
    if not (adapter / "adapter_config.json").is_file():
        raise SchemaError(
            [
                Problem(
                    where,
                    f"expected an adapter (adapter_config.json) at {adapter} for weights "
                    f"'adapter', found none",
                    "unsupported_checkpoint",
                )
            ]
        )
    if parent is None or path.resolve() in _seen:
        found = (
            "a cycle" if parent is not None else repr(manifest.resolved_config.get("parent_dir"))
        )
        raise SchemaError(
            [
                Problem(
                    where,
                    f"an adapter-only checkpoint needs its parent's model: expected "
                    f"resolved_config['parent_dir'] or the parent {manifest.parent!r} among the "
                    f"checkpoints of this command, found {found}",
                    "unsupported_checkpoint",
                )
            ]
        )
    base = read_checkpoint(parent, by_name, (*_seen, path.resolve()))
    return CheckpointSource(
        path,
        manifest,
        manifest_json,
        behavior,
        model_dir=base.model_dir,
        adapters=(*base.adapters, adapter),
    )


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
"""Weight formats torch unpickles: loading one can run code, so they are refused, never read."""


def safetensors_problems(path: Path) -> list[Problem]:
    """A safetensors file whose header is unreadable or whose data ends early (a truncated copy),
    found from the header and the file size alone, before a store is touched."""
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little") if size >= 8 else -1
            if n < 2 or 8 + n > size:
                raise ValueError(f"a header of {n} bytes in a file of {size}")
            header = json.loads(fh.read(n))
        end = max(
            (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
            default=0,
        )
    except (ValueError, KeyError, TypeError, IndexError) as e:
        return [
            Problem(
                str(path),
                f"expected a safetensors file, found an unreadable header ({e}): truncated or not "
                "safetensors",
                "bad_weights",
            )
        ]
    if 8 + n + end > size:
        return [
            Problem(
                str(path),
                f"expected {8 + n + end} bytes (header and tensors), found {size}: the file is "
                "truncated",
                "bad_weights",
            )
        ]
    return []


def _pickles(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())


def weight_problems(folder: Path, *, adapter: bool = False) -> list[Problem]:
    """Every reason ``folder``'s weights (or a peft adapter's) must not be loaded: safetensors
    only, never pickle; complete files; a config.json for a model."""
    index = folder / "model.safetensors.index.json"
    single = folder / ("adapter_model.safetensors" if adapter else "model.safetensors")
    problems: list[Problem] = []
    if not adapter and not (folder / "config.json").is_file():
        problems.append(
            Problem(
                str(folder),
                "expected an HF model directory with config.json, found none",
                "missing_config",
            )
        )
    if single.is_file():
        files = [single]
    elif not adapter and index.is_file():
        try:
            shards = sorted(
                set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            )
        except (ValueError, KeyError, AttributeError) as e:
            return [
                *problems,
                Problem(
                    str(index), f"expected a weight_map, found invalid JSON ({e})", "bad_weights"
                ),
            ]
        files = [folder / s for s in shards]
        problems += [
            Problem(
                str(f), "expected this shard (named in the index), found none", "missing_weights"
            )
            for f in files
            if not f.is_file()
        ]
        files = [f for f in files if f.is_file()]
    else:
        pickles = _pickles(folder)
        if pickles:
            found = ", ".join(p.name for p in pickles)
            problems.append(
                Problem(
                    str(pickles[0]),
                    f"expected safetensors weights ({single.name}), found only pickle weights "
                    f"({found}): pickle files can run code when loaded and are never read; convert "
                    "them with save_pretrained(safe_serialization=True) where you trust them",
                    "pickle_weights",
                )
            )
        else:
            problems.append(
                Problem(
                    str(folder),
                    f"expected weights ({single.name}{'' if adapter else ' or ' + index.name}), "
                    "found none",
                    "missing_weights",
                )
            )
        files = []
    for f in files:
        problems += safetensors_problems(f)
    return problems


def check_loadable(src: CheckpointSource) -> None:
    """Refuse, before anything runs, a checkpoint whose weights or adapters cannot be loaded
    safely: missing, truncated or pickle-only."""
    problems = weight_problems(src.model_dir)
    own = src.path / (src.manifest.adapter_dir or "adapter")
    adapters = list(src.adapters)
    if (own / "adapter_config.json").is_file() and own not in adapters:
        adapters.append(own)  # a merged stage's own adapter is read for its LoRA factors
    for adapter in adapters:
        problems += weight_problems(adapter, adapter=True)
    if problems:
        raise SchemaError(problems, f"refusing checkpoint {src.path}")


def load_config(model_dir: Path) -> Any:
    """The model's config; a model type transformers does not implement is refused, since
    loading it would mean running the directory's own code (``auto_map``), which never happens."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    where = model_dir / "config.json"
    try:
        raw = json.loads(where.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SchemaError(
            [Problem(str(where), f"expected JSON, found invalid JSON ({e})", "bad_json")]
        ) from e
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type not in CONFIG_MAPPING:
        code = (
            f" and auto_map {raw['auto_map']} (custom code, never run)" if "auto_map" in raw else ""
        )
        raise SchemaError(
            [
                Problem(
                    f"{where} field 'model_type'",
                    f"expected a model type transformers implements, found {model_type!r}{code}",
                    "unsupported_model",
                )
            ]
        )
    return AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False)


def model_geometry(config: Any) -> Geometry:
    """Store shape of a model, from its config (LoRA modules via a weightless meta model)."""
    import torch
    from transformers import AutoModelForCausalLM

    from repcollapse.extract.lora import lora_module_shapes

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
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


def load_model(src: CheckpointSource, device: Any) -> Any:
    """The checkpoint's model in float32: its weights, or its merged ancestor's with every
    adapter of the chain merged in, oldest first."""
    import torch
    from transformers import AutoModelForCausalLM

    # Safetensors only and never a repository's own code (check_loadable ran before).
    model = AutoModelForCausalLM.from_pretrained(
        str(src.model_dir), dtype=torch.float32, trust_remote_code=False, use_safetensors=True
    )
    if src.adapters:
        from peft import PeftModel

        for adapter in src.adapters:
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.to(device)
    model.eval()
    return model


def update_factors(model: Any, src: CheckpointSource, by_name: dict[str, CheckpointSource]) -> Any:
    """LoRA factors of the stage (adapter, or SVD of the delta for a full stage), or None."""
    from repcollapse.extract.lora import full_delta_factors, read_adapter
    from repcollapse.extract.store_io import LORA_RANK_CAPACITY

    m = src.manifest
    adapter = src.path / (m.adapter_dir or "adapter")
    if m.stage_kind == "full":
        if src.adapters:
            raise ValueError(
                f"{src.path}: a full fine-tuning stage has weights, expected weights 'merged', "
                "found 'adapter'"
            )
        parent = parent_dir(src.path, m, {n: s.path for n, s in by_name.items()})
        if parent is None:
            raise FileNotFoundError(
                f"{src.path}: a full fine-tuning stage needs its parent's weights; expected "
                f"resolved_config['parent_dir'] or the parent checkpoint {m.parent!r} among the "
                f"checkpoints of this command, found {m.resolved_config.get('parent_dir')!r}"
            )
        rank = min(m.lora_rank or LORA_RANK_CAPACITY, LORA_RANK_CAPACITY)
        return full_delta_factors(model, parent, rank)
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
