"""The model, tokenizer and device helpers every training stage shares (loading, device choice,
provenance): kept apart from ``base.py`` so that checkpoint 0 can call the evaluator, and the
evaluator these helpers, without the two importing each other."""

from __future__ import annotations

import importlib.metadata
import os
import platform
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
        tok.chat_template = (
            "{% for m in messages %}{% if m['role'] == 'user' %}Question: {{ m['content'] }}\n"
            "{% else %}Answer: {{ m['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}Answer: {% endif %}"
        )
    return tok
