"""The store contract as data: names, dims, dtypes, chunking and descriptions.

One Zarr v3 store per experiment. The root group is the teacher-forced probe; a generated-output
probe lives in the sub-group ``generated`` with the same layout (one sub-store per checkpoint
under it, see ``GENERATED_INDEX_ATTR``). Every array carries
``dimension_names`` (read by xarray) and a ``description`` attribute, so a store is
self-describing to someone who only has ``xarray.open_zarr(path, consolidated=False)``.

Token order (schema v1): tokens are ordered by (domain, example, position). Each domain is a
contiguous slice; span selections are masks over the ``span`` coordinate. A (domain, span) order
was considered and rejected: extraction then writes contiguous token ranges
batch by batch with one buffered chunk per layer (memory flat in the corpus size), and
per-sequence metrics read each example as one slice. Analysis accumulates per (domain, span)
cell anyway, so it never needs a span to be contiguous.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

SCHEMA_VERSION = 1
"""Bump on any change of the contract, and add a migration note in docs/store.md."""

STORE_KIND = "repcollapse-activation-store"

GENERATED_GROUP = "generated"
GENERATED_INDEX_ATTR = "checkpoint_groups"
"""Attr of ``generated`` when it holds one sub-store per checkpoint: {checkpoint name: group path}.

Generated tokens differ per checkpoint, so ``extract --generate`` writes a full one-checkpoint
store per checkpoint at ``generated_group(name)``."""


def generated_group(checkpoint_name: str) -> str:
    """Group path of one checkpoint's generated-output store."""
    return f"{GENERATED_GROUP}/{checkpoint_name.replace('/', '__')}"


# --- dimensions --------------------------------------------------------------------------------
CHECKPOINT, LAYER, TOKEN, FEATURE = "checkpoint", "layer", "token", "feature"
K, HEAD, VOCAB, BLOCK, RANK = "k", "head", "vocab", "block", "rank"


def lora_in_dim(module: str) -> str:
    return f"lora_in__{module}"


def lora_out_dim(module: str) -> str:
    return f"lora_out__{module}"


def lora_a_name(module: str) -> str:
    return f"lora_A__{module}"


def lora_b_name(module: str) -> str:
    return f"lora_B__{module}"


@dataclass(frozen=True)
class VariableSpec:
    name: str
    dims: tuple[str, ...]
    dtype: str
    description: str
    units: str | None = None
    """CF ``units`` (UDUNITS spelling); None: "1" (dimensionless) for numbers, none for text
    and flags."""


def cf_attrs(spec: VariableSpec) -> dict[str, str]:
    """The attributes every array carries, all from its spec (one place): ``description``
    (checked by validation), and CF's ``long_name`` and ``units`` (read by xarray, Panoply,
    CF-aware tools). Text and boolean arrays get no ``units``; numbers ``"1"`` (activations,
    log-probs, nats and counts are dimensionless) unless the spec says."""
    attrs = {"description": spec.description, "long_name": spec.description}
    if spec.units is not None:
        attrs["units"] = spec.units
    elif spec.dtype not in ("str", "bool"):
        attrs["units"] = "1"
    return attrs


# --- token coordinates (dim: token), written once at creation ---------------------------------
TOKEN_COORDS: dict[str, VariableSpec] = {
    spec.name: spec
    for spec in (
        VariableSpec("example", (TOKEN,), "str", "probe record id the token belongs to"),
        VariableSpec("domain", (TOKEN,), "str", "probe domain of the example"),
        VariableSpec(
            "span",
            (TOKEN,),
            "str",
            "finest span label: prompt, early_response, late_response, cot, refusal, response",
        ),
        VariableSpec("position", (TOKEN,), "int32", "0-based position in the tokenized sequence"),
        VariableSpec("token_id", (TOKEN,), "int32", "input token id at this position"),
        VariableSpec(
            "target_id", (TOKEN,), "int32", "next token id (teacher-forced target); -1 if none"
        ),
        VariableSpec(
            "split",
            (TOKEN,),
            "str",
            "'fit' or 'heldout', assigned per example (seeded) for probes without token leakage",
        ),
        VariableSpec(
            "is_sink",
            (TOKEN,),
            "bool",
            "attention-sink token (position 0 or a flagged high-norm token); excluded by default",
        ),
    )
}

# --- checkpoint coordinates (dim: checkpoint), one chunk per checkpoint -----------------------
CHECKPOINT_COORDS: dict[str, VariableSpec] = {
    spec.name: spec
    for spec in (
        VariableSpec("name", (CHECKPOINT,), "str", "unique checkpoint name"),
        VariableSpec("sequence", (CHECKPOINT,), "str", "training sequence ('' for the base)"),
        VariableSpec("stage_index", (CHECKPOINT,), "int32", "0 = base, 1.. = stage in sequence"),
        VariableSpec("stage_kind", (CHECKPOINT,), "str", "base, sft, dpo, full or refresh"),
        VariableSpec("stage_domain", (CHECKPOINT,), "str", "training domain of the stage"),
        VariableSpec("parent", (CHECKPOINT,), "str", "name of the input checkpoint ('' for base)"),
        VariableSpec("seed", (CHECKPOINT,), "int64", "training seed"),
        VariableSpec("tokens_seen", (CHECKPOINT,), "int64", "cumulative training tokens"),
        VariableSpec("mitigation", (CHECKPOINT,), "str", "mitigation of the stage, 'none' if none"),
        VariableSpec("lora_rank", (CHECKPOINT,), "int32", "rank of the stored update (0: none)"),
        VariableSpec(
            "lora_scaling", (CHECKPOINT,), "float32", "alpha / r: Delta W = scaling * B @ A"
        ),
        VariableSpec("head", (CHECKPOINT,), "int32", "index into the 'head' dim of unembedding"),
        VariableSpec("manifest_json", (CHECKPOINT,), "str", "the checkpoint's manifest.json"),
        VariableSpec("behavior_json", (CHECKPOINT,), "str", "the checkpoint's behavior.json"),
    )
}

LAYER_COORD = VariableSpec(
    LAYER,
    (LAYER,),
    "int32",
    "layer: 0 = embeddings, i = output of block i, last = input of the unembedding",
)
"""Not stored: ``open_store`` adds it to its view (0 .. n_layers - 1)."""

COMPLETE = VariableSpec(
    "complete",
    (CHECKPOINT,),
    "uint8",
    "1 once every chunk of the checkpoint is written (written last); readers ignore 0",
)

CHECKSUMS = VariableSpec(
    "checksums_json",
    (CHECKPOINT,),
    "str",
    "sha256 of every chunk of the checkpoint's slot, per variable (JSON: algorithm, chunks: "
    "{variable: {chunk key: hex}}), written just before complete; '' in stores written before "
    "checksums existed",
)
"""Optional in schema v1: stores written before it lack the array (validated with a warning)."""

HIDDEN = VariableSpec(
    "hidden",
    (CHECKPOINT, LAYER, TOKEN, FEATURE),
    "float16",
    "residual stream after each block; layer 0 = embeddings, last = input of the unembedding "
    "(after the final norm)",
)

HIDDEN_DTYPES: tuple[str, ...] = ("float16", "float32")
"""The dtypes ``hidden`` may be stored in, chosen per store at creation."""
DEFAULT_HIDDEN_DTYPE = "float16"
"""Half the bytes; enough for every family whose residual stream stays within +-65,504."""
HIDDEN_DTYPE_ATTR = "hidden_dtype"
"""Root attribute recording the store's ``hidden`` dtype (one of ``HIDDEN_DTYPES``). Stores
written before it existed lack it: they are float16 (``hidden_dtype_of``)."""


def hidden_dtype_of(attrs: Mapping[str, Any]) -> str:
    """The ``hidden`` dtype a store's attributes record (float16 where none is recorded)."""
    return str(attrs.get(HIDDEN_DTYPE_ATTR, DEFAULT_HIDDEN_DTYPE))


def check_hidden_dtype(value: Any, where: str) -> str:
    """``value`` if it is one of ``HIDDEN_DTYPES``, else ValueError naming ``where``."""
    if value not in HIDDEN_DTYPES:
        raise ValueError(f"{where}: expected one of {list(HIDDEN_DTYPES)}, found {value!r}")
    return str(value)


def hidden_spec(dtype: str = DEFAULT_HIDDEN_DTYPE) -> VariableSpec:
    """The spec of ``hidden`` in a store of that dtype (``HIDDEN`` is the float16 one)."""
    return replace(HIDDEN, dtype=check_hidden_dtype(dtype, "hidden dtype"))


LOGIT_STATS: dict[str, VariableSpec] = {
    spec.name: spec
    for spec in (
        VariableSpec("logit_entropy", (CHECKPOINT, TOKEN), "float32", "entropy (nats) at T=1"),
        VariableSpec("logit_top1_prob", (CHECKPOINT, TOKEN), "float32", "largest probability"),
        VariableSpec("logit_top2_prob", (CHECKPOINT, TOKEN), "float32", "second probability"),
        VariableSpec("logit_margin", (CHECKPOINT, TOKEN), "float32", "top-1 minus top-2 logit"),
        VariableSpec(
            "logit_target_logprob", (CHECKPOINT, TOKEN), "float32", "log p(target); NaN if none"
        ),
        VariableSpec(
            "logit_support_90", (CHECKPOINT, TOKEN), "int32", "smallest k with top-k mass >= 0.9"
        ),
        VariableSpec("logit_argmax_id", (CHECKPOINT, TOKEN), "int32", "argmax token id"),
    )
}

TOPK_IDS = VariableSpec("topk_ids", (CHECKPOINT, TOKEN, K), "int32", "top-k next-token ids, T=1")
TOPK_LOGPROBS = VariableSpec(
    "topk_logprobs", (CHECKPOINT, TOKEN, K), "float16", "top-k next-token log-probs, T=1"
)
UNEMBEDDING = VariableSpec(
    "unembedding",
    (HEAD, VOCAB, FEATURE),
    "float16",
    "lm_head weight, once per distinct head: logits = hidden[last layer] @ unembedding.T",
)

BEHAVIOR_KEYS: tuple[str, ...] = (
    "target_score",
    "retention",
    "ece",
    "val_loss",
    "future_score",
    "future_auc",
)
BEHAVIOR: dict[str, VariableSpec] = {
    f"behavior__{key}": VariableSpec(
        f"behavior__{key}", (CHECKPOINT,), "float32", f"behavioural evaluation: {key} (NaN: none)"
    )
    for key in BEHAVIOR_KEYS
}

CHECKPOINT_TABLE: dict[str, str] = {
    "store_id": "str",
    "model_family": "str",
    "model_id": "str",
    "checkpoint": "str",
    **{
        name: "int64" if spec.dtype.startswith("int") else "str"
        for name, spec in CHECKPOINT_COORDS.items()
        if name not in ("name", "lora_scaling", "head", "manifest_json", "behavior_json")
    },
    **{key: "float64" for key in BEHAVIOR_KEYS},
}
"""Columns (and dtypes) of a checkpoint table, one row per complete checkpoint: the store's
identity (attrs), the checkpoint's coordinates ("checkpoint" is ``name``) and its behaviour.
analyze writes ``checkpoints.parquet`` with exactly these and reads nothing less."""

BEHAVIOR_MEASURES: tuple[str, ...] = (
    *BEHAVIOR_KEYS,
    "target_nll",
    "retention_nll",
    "future_nll",
    "future_nll_auc",
    "future_steps_to_nll",
)
"""Behavioural measures with a standard error and an n in behavior.json (docs/INTERFACES.md)."""
CHECKPOINT_BEHAVIOR_DETAIL: dict[str, str] = {
    col: "float64"
    for key in BEHAVIOR_MEASURES
    for col in (
        (f"{key}_se", f"{key}_n") if key in BEHAVIOR_KEYS else (key, f"{key}_se", f"{key}_n")
    )
}
"""Columns ``checkpoints.parquet`` carries after CHECKPOINT_TABLE: each measure's SE and n (and
the continuous measures' values), read from the checkpoint's ``behavior_json``; NaN where a
checkpoint's evaluation predates them. Readers do not require them (older tables stay readable),
and the store keeps no variable of its own for them (older stores stay valid)."""

TRAIN_LOSSES = "train_losses"
"""Key of a checkpoint's ``behavior_json`` and column of ``checkpoints.parquet``: the stage's
training loss at every optimizer step, in order (the ``losses`` of the checkpoint's
train_log.json, added by extract; absent for checkpoint 0 and wherever train_log.json is missing).
The column holds it as JSON text ('' where none), so the table stays one row per checkpoint."""

REQUIRED_VARIABLES: dict[str, VariableSpec] = {
    HIDDEN.name: HIDDEN,
    COMPLETE.name: COMPLETE,
    **LOGIT_STATS,
    TOPK_IDS.name: TOPK_IDS,
    TOPK_LOGPROBS.name: TOPK_LOGPROBS,
    UNEMBEDDING.name: UNEMBEDDING,
    **BEHAVIOR,
}
"""Variables every store has (LoRA variables depend on the model's modules)."""

REQUIRED_ATTRS: tuple[str, ...] = (
    "schema_version",
    "store_kind",
    "store_id",
    "probe_hash",
    "model_id",
    "model_family",
    "tokenizer",
    "code_version",
    "extraction_config",
    "lora_modules",
    "token_chunk",
    "created_at",
)


def lora_variable_specs(module: str) -> tuple[VariableSpec, VariableSpec]:
    a = VariableSpec(
        lora_a_name(module),
        (CHECKPOINT, BLOCK, RANK, lora_in_dim(module)),
        "float32",
        f"LoRA A of {module} per block (rank padded with zeros to the store's rank capacity)",
    )
    b = VariableSpec(
        lora_b_name(module),
        (CHECKPOINT, BLOCK, lora_out_dim(module), RANK),
        "float32",
        f"LoRA B of {module}; Delta W = lora_scaling * B @ A (full FT: truncated SVD of the delta)",
    )
    return a, b
