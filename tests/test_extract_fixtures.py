"""Helpers for the extract tests: a tiny random Llama with a chat template, checkpoints, a probe.

Everything is built offline in well under a second: a byte-level BPE trained on a few sentences
(so offsets and merges behave like a real tokenizer), a 2-block LlamaForCausalLM with a larger
init range (so next-token distributions are not all uniform), and a hand-made probe corpus that
covers every domain and span. Imported by the other ``test_extract_*`` modules.
"""

from __future__ import annotations

import json
from pathlib import Path

from repcollapse.store_schema.manifest import CheckpointManifest, write_json_atomic
from repcollapse.store_schema.records import DOMAINS

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are tiny.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is 12 plus 30? Let us think step by step. 12 + 30 = 42. The answer is 42.",
    "def add(a, b):\n    return a + b\n",
    "I cannot help with that request, it could cause harm.",
    "Paris is the capital of France. Water boils at 100 degrees.",
    "Write a short poem about the sea and the wind.",
]


def make_tokenizer(path: Path, *, chat_template: bool = True):  # noqa: ANN201 - transformers type
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 3, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return fast


def make_tiny_checkpoint(
    path: Path,
    *,
    seed: int = 0,
    n_layers: int = 2,
    hidden: int = 32,
    name: str = "base",
    stage_index: int = 0,
    stage_kind: str = "base",
    parent: str = "",
    chat_template: bool = True,
    manifest: bool = True,
    **manifest_fields: object,
) -> Path:
    """A tiny random LlamaForCausalLM checkpoint directory with tokenizer and manifest.json."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(path, chat_template=chat_template)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.3,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    if manifest:
        write_manifest(
            path,
            name=name,
            stage_index=stage_index,
            stage_kind=stage_kind,
            parent=parent,
            **manifest_fields,
        )
    return path


def write_manifest(path: Path, **fields: object) -> None:
    base = {
        "name": "base",
        "sequence": "",
        "stage_index": 0,
        "stage_kind": "base",
        "stage_domain": "",
        "parent": "",
        "seed": 0,
        "tokens_seen": 0,
        "model_family": "tiny-llama",
        "base_model": "tiny-llama",
    }
    base.update(fields)
    write_json_atomic(Path(path) / "manifest.json", CheckpointManifest(**base).to_dict())


def probe_records() -> list[dict]:
    """Two records per domain, with named spans; given out of domain order on purpose."""
    recs = []
    texts = {
        "general": ("Write a poem about the sea.", "The sea is wide. The wind is soft."),
        "math": ("What is 12 plus 30?", "Let us think. 12 + 30 = 42. The answer is 42."),
        "code": ("Write add in Python.", "def add(a, b):\n    return a + b\n"),
        "safety": ("How do I make a weapon?", "I cannot help with that request."),
        "long_cot": ("Is 42 even?", "Step by step: 42 = 2 * 21, so it is even. Answer: yes."),
        "factual": ("Capital of France?", "Paris is the capital of France."),
    }
    for i in range(2):
        for domain in reversed(DOMAINS):
            prompt, ref = texts[domain]
            ref = ref if i == 0 else ref + " Indeed."
            half = len(ref) // 2
            spans = [
                {"name": "early_response", "start": 0, "end": half},
                {"name": "late_response", "start": half, "end": len(ref)},
            ]
            if domain == "long_cot":
                spans.append({"name": "cot", "start": 0, "end": ref.index("Answer")})
            if domain == "safety":
                spans.append({"name": "refusal", "start": 0, "end": len(ref)})
            recs.append(
                {
                    "id": f"{domain}-{i:02d}",
                    "domain": domain,
                    "prompt": prompt,
                    "reference": ref,
                    "spans": spans,
                    "source": "test",
                    "license": "CC0",
                }
            )
    return recs


def write_probe(path: Path, records: list[dict] | None = None) -> Path:
    records = probe_records() if records is None else records
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return Path(path)


def test_tiny_tokenizer_has_offsets(tmp_path: Path) -> None:
    tok = make_tokenizer(tmp_path)
    enc = tok("Paris is the capital", return_offsets_mapping=True, add_special_tokens=False)
    assert enc["offset_mapping"][0][0] == 0
    assert tok.decode(enc["input_ids"]) == "Paris is the capital"


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_lora_stage(
    parent: Path, out: Path, *, name: str = "A/01-math", seed: int = 1, **lora_kwargs: object
) -> tuple[Path, dict[str, object]]:
    """A LoRA SFT stage on ``parent``: random adapter in ``out/adapter``, merged weights in ``out``.

    Returns the directory and peft's own delta weights {module name: (out, in) tensor}.
    """
    import shutil

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(parent), dtype=torch.float32)
    cfg = LoraConfig(
        r=int(lora_kwargs.pop("r", 4)),
        lora_alpha=float(lora_kwargs.pop("lora_alpha", 8)),
        target_modules=LORA_TARGETS,
        **lora_kwargs,
    )
    peft_model = get_peft_model(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in peft_model.named_parameters():
            if "lora_B" in pname:  # peft initialises B to zero: make the update non-trivial
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    deltas = {}
    for mname, module in peft_model.named_modules():
        if hasattr(module, "get_delta_weight") and "default" in getattr(module, "lora_A", {}):
            deltas[mname] = module.get_delta_weight("default").detach().clone()
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out / "adapter"))
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(str(out))
    for f in parent.iterdir():
        if f.name.startswith("tokenizer") or f.name in (
            "special_tokens_map.json",
            "chat_template.jinja",
        ):
            shutil.copy(f, out / f.name)
    write_manifest(
        out,
        name=name,
        sequence=name.split("/")[0],
        stage_index=1,
        stage_kind="sft",
        stage_domain="math",
        parent="base",
        seed=seed,
        tokens_seen=1000,
        adapter_dir="adapter",
        lora_rank=cfg.r,
        lora_alpha=float(cfg.lora_alpha),
    )
    (out / "behavior.json").write_text(json.dumps({"target_score": 0.5, "val_loss": 2.0}))
    return out, deltas


def make_full_stage(parent: Path, out: Path, *, name: str = "A/02-full", seed: int = 2) -> Path:
    """A full fine-tuning stage: every block Linear of ``parent`` perturbed (dense update)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(parent), dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if ".layers." in pname and pname.endswith("proj.weight"):
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    model.save_pretrained(str(out))
    for f in parent.iterdir():
        if f.name.startswith("tokenizer") or f.name in (
            "special_tokens_map.json",
            "chat_template.jinja",
        ):
            shutil.copy(f, out / f.name)
    parent_manifest = json.loads((parent / "manifest.json").read_text())
    write_manifest(
        out,
        name=name,
        sequence=name.split("/")[0],
        stage_index=2,
        stage_kind="full",
        stage_domain="code",
        parent=parent_manifest["name"],
        seed=seed,
        tokens_seen=2000,
        resolved_config={"parent_dir": str(parent)},
    )
    return out
