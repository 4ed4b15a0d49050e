"""Checkpoint manifests, shared by train (which writes them) and extract (which reads them).

A checkpoint manifest is ``manifest.json`` in a checkpoint directory, written by train last
(atomically), read by extract: its presence marks the checkpoint directory complete.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from repcollapse.store_schema.problems import Problem, SchemaError
from repcollapse.store_schema.records import STAGE_KINDS


@dataclass(frozen=True)
class CheckpointManifest:
    """``manifest.json`` of one checkpoint directory (train writes it last; extract reads it)."""

    name: str
    sequence: str
    stage_index: int
    stage_kind: str
    stage_domain: str
    parent: str
    seed: int
    tokens_seen: int
    mitigation: str = "none"
    model_family: str = ""
    base_model: str = ""
    """Model id of checkpoint 0 of the chain (e.g. SmolLM2-135M-Instruct)."""
    weights: str = "merged"
    """``merged``: the directory holds full weights; ``adapter``: base pointer plus adapter."""
    adapter_dir: str = ""
    """Relative path of the stage's own adapter (peft format), '' when the stage has none."""
    lora_rank: int = 0
    lora_alpha: float = 0.0
    resolved_config: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0
    hardware: str = ""
    library_versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_MANIFEST_TYPES: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "sequence": str,
    "stage_index": int,
    "stage_kind": str,
    "stage_domain": str,
    "parent": str,
    "seed": int,
    "tokens_seen": int,
    "mitigation": str,
    "model_family": str,
    "base_model": str,
    "weights": str,
    "adapter_dir": str,
    "lora_rank": int,
    "lora_alpha": (int, float),
    "resolved_config": dict,
    "wall_time_s": (int, float),
    "hardware": str,
    "library_versions": dict,
}
_MANIFEST_REQUIRED = (
    "name",
    "sequence",
    "stage_index",
    "stage_kind",
    "stage_domain",
    "parent",
    "seed",
    "tokens_seen",
)


def validate_manifest(obj: Any, location: str = "manifest.json") -> list[Problem]:
    if not isinstance(obj, Mapping):
        return [
            Problem(location, f"expected a JSON object, found {type(obj).__name__}", "wrong_type")
        ]
    problems: list[Problem] = []
    for key in _MANIFEST_REQUIRED:
        if key not in obj:
            problems.append(
                Problem(f"{location} field '{key}'", "missing required field", "missing_field")
            )
    for key, value in obj.items():
        expected = _MANIFEST_TYPES.get(key)
        if expected is None:
            problems.append(
                Problem(
                    f"{location} field '{key}'",
                    f"unknown field; expected one of {sorted(_MANIFEST_TYPES)}",
                    "unknown_field",
                )
            )
        elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            want = (
                expected.__name__
                if isinstance(expected, type)
                else "/".join(t.__name__ for t in expected)
            )
            problems.append(
                Problem(
                    f"{location} field '{key}'",
                    f"expected {want}, found {type(value).__name__} {value!r}",
                    "wrong_type",
                )
            )
    name = obj.get("name")
    if isinstance(name, str) and not name.strip():
        # The name is the checkpoint's key in the store: an empty one cannot be told apart.
        problems.append(
            Problem(
                f"{location} field 'name'",
                f"expected a non-empty checkpoint name, found {name!r}",
                "bad_value",
            )
        )
    kind = obj.get("stage_kind")
    if isinstance(kind, str) and kind not in STAGE_KINDS:
        problems.append(
            Problem(
                f"{location} field 'stage_kind'",
                f"expected one of {list(STAGE_KINDS)}, found {kind!r}",
                "bad_value",
            )
        )
    for key in ("stage_index", "tokens_seen", "lora_rank"):
        v = obj.get(key)
        if isinstance(v, int) and v < 0:
            problems.append(
                Problem(f"{location} field '{key}'", f"expected >= 0, found {v}", "bad_value")
            )
    if obj.get("weights", "merged") not in ("merged", "adapter"):
        problems.append(
            Problem(
                f"{location} field 'weights'",
                f"expected 'merged' or 'adapter', found {obj.get('weights')!r}",
                "bad_value",
            )
        )
    return problems


def parse_manifest(obj: Any, location: str = "manifest.json") -> CheckpointManifest:
    problems = validate_manifest(obj, location)
    if problems:
        raise SchemaError(problems, "invalid checkpoint manifest")
    return CheckpointManifest(**obj)


def read_manifest(checkpoint_dir: str | Path) -> CheckpointManifest:
    """Read ``manifest.json``; a directory without one is an incomplete checkpoint."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        found = "a file" if folder.exists() else "nothing: the path does not exist"
        raise SchemaError(
            [
                Problem(
                    str(folder),
                    f"expected a checkpoint directory, found {found}",
                    "not_a_checkpoint",
                )
            ]
        )
    path = folder / "manifest.json"
    if not path.is_file():
        raise SchemaError(
            [
                Problem(
                    str(path),
                    "expected a manifest.json (written last by train), found none: the checkpoint is incomplete or not a checkpoint",
                    "incomplete_checkpoint",
                )
            ]
        )
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SchemaError(
            [Problem(str(path), f"expected JSON, found invalid JSON ({e.msg})", "bad_json")]
        ) from e
    return parse_manifest(obj, str(path))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON via a temporary file and rename, so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
