"""The model, tokenizer and device helpers every training stage shares (loading, device choice,
provenance): kept apart from ``base.py`` so that checkpoint 0 can call the evaluator, and the
evaluator these helpers, without the two importing each other."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
from pathlib import Path
from typing import Any

VERSIONED_LIBS = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "tokenizers",
    "safetensors",
    "repcollapse",
)


_MODEL_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def hf_cache_dir() -> Path:
    """The hub cache huggingface_hub reads: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
    ``~/.cache/huggingface/hub``; read from the environment at each call (huggingface_hub reads
    it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def resolve_model(model: str | Path) -> Path:
    """``--model``: an HF model directory, or a model id (``org/name``) already in the local
    Hugging Face cache, read offline (``local_files_only``: nothing is downloaded). Anything
    else is a ``SchemaError`` naming the id and the cache directory searched."""
    from repcollapse.store_schema.problems import Problem, SchemaError

    path = Path(model)
    if path.exists():
        return path
    text = str(model)
    cache = hf_cache_dir()
    if not _MODEL_ID.fullmatch(text) or text.endswith((".", "-")):
        raise SchemaError(
            [
                Problem(
                    text,
                    "expected an HF model directory or a model id (org/name) in the local "
                    "Hugging Face cache, found no such path",
                    "no_model",
                )
            ]
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        found = snapshot_download(repo_id=text, cache_dir=str(cache), local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError) as e:
        folder = cache / f"models--{text.replace('/', '--')}"
        why = "not there" if not folder.exists() else f"no usable snapshot ({type(e).__name__})"
        raise SchemaError(
            [
                Problem(
                    text,
                    f"expected a model directory, or the model id in the local Hugging Face cache "
                    f"{cache} ({folder.name}: {why}); nothing is downloaded: fetch it where "
                    f"there is a network (`hf download {text}`, with HF_HOME pointing at this "
                    "cache) or pass a directory",
                    "no_model",
                )
            ]
        ) from e
    return Path(found)


def resolve_device(device: str | None = None) -> str:
    """The device to train and evaluate on; a CUDA device this machine lacks is a usage error
    (found before anything is written, not as a traceback after the weights are saved)."""
    import torch

    from repcollapse.extract.preflight import UsageError

    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError as e:
        raise UsageError(
            f"--device {device}: expected cpu, cuda or cuda:N, found {device!r}"
        ) from e
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (parsed.index or 0) >= count:
            raise UsageError(
                f"--device {device}: expected a CUDA device, found {count} on this machine "
                "(use --device cpu, or leave it out)"
            )
    return device


def library_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in VERSIONED_LIBS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def hardware(device: str) -> str:
    desc = f"{platform.machine()} {os.cpu_count()} cpu, {platform.system()}"
    if device.startswith("cuda"):
        import torch

        desc += f", {torch.cuda.get_device_name(0)}"
    return desc


def load_model(path: str | Path, device: str = "cpu", *, train: bool = False) -> Any:
    """Load an HF causal LM in float32 (training keeps fp32 master weights; bf16 is autocast)."""
    import torch
    from transformers import AutoModelForCausalLM

    # Safetensors only (pickle weights can run code) and never a directory's own code.
    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=torch.float32, trust_remote_code=False, use_safetensors=True
    )
    model.to(device)
    model.train(train)
    return model


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        # A base model without a chat template (e.g. Gemma 3 270M pretrained) gets a plain one, so
        # prompts and responses are delimited the same way in training and evaluation.
        # It starts with the BOS token: templated text is tokenized without special tokens, and
        # a base model is trained with <bos> first (Gemma's tokenizer adds it to plain text).
        tok.chat_template = (
            "{% if bos_token %}{{ bos_token }}{% endif %}"
            "{% for m in messages %}{% if m['role'] == 'user' %}Question: {{ m['content'] }}\n"
            "{% else %}Answer: {{ m['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}Answer: {% endif %}"
        )
    return tok
