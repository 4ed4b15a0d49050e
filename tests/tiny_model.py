"""Test helpers: a tiny randomly initialised Llama with an offline tokenizer, and tiny data.

``make_tiny_model(path)`` writes an HF directory (safetensors, config, tokenizer with a ChatML
chat template, eos and pad tokens) that loads with ``AutoModelForCausalLM`` /
``AutoTokenizer.from_pretrained(path)``; nothing is downloaded. The tokenizer is a byte-level BPE
(so any text encodes, no unknown tokens) trained on a few hundred generated strings.
``write_tiny_data(path)`` writes a data directory in the documented formats (docs/INTERFACES.md).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]

_WORDS = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "is",
    "what",
    "how",
    "why",
    "please",
    "answer",
    "explain",
    "compute",
    "sum",
    "number",
    "code",
    "python",
    "def",
    "return",
    "print",
    "list",
    "value",
    "plan",
    "step",
    "first",
    "then",
    "finally",
    "because",
    "so",
    "result",
    "safe",
    "sorry",
    "cannot",
    "help",
    "with",
    "that",
    "question",
    "write",
    "function",
    "add",
    "two",
    "numbers",
    "give",
    "me",
    "short",
    "reply",
    "yes",
    "no",
    "think",
    "carefully",
    "about",
    "it",
    "assistant",
    "user",
    "system",
    "model",
    "data",
    "fact",
    "capital",
    "city",
    "river",
    "is",
    "was",
    "are",
]


def _corpus(seed: int, n: int = 400) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.choices(_WORDS, k=rng.randint(4, 14))
        nums = f"{rng.randint(0, 99)} + {rng.randint(0, 99)} = {rng.randint(0, 199)}"
        code = f"def f{i % 7}(x):\n    return x * {i % 5}"
        out.append(" ".join(words) + f". {nums}. {code}")
    return out


def make_tokenizer(seed: int = 0, vocab_size: int = 384):
    """A PreTrainedTokenizerFast: byte-level BPE, ChatML template, eos <|im_end|>, pad <|pad|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(_corpus(seed), trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_tiny_model(
    path: str | Path, *, seed: int = 0, n_layers: int = 2, hidden: int = 32
) -> Path:
    """Write a tiny random LlamaForCausalLM and its tokenizer to ``path``; returns the path."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


# ---------------------------------------------------------------------------------------------
# Tiny data in the documented formats


def _sft_record(domain: str, split: str, i: int, rng: random.Random) -> dict:
    a, b = rng.randint(0, 50), rng.randint(0, 50)
    filler = " ".join(rng.choices(_WORDS, k=rng.randint(2, 12)))
    rid = f"{domain}-{split}-{i:05d}"
    if domain in ("math", "long_cot"):
        steps = f"first {a} then {b}. " * (3 if domain == "long_cot" else 1)
        return {
            "id": rid,
            "domain": domain,
            "prompt": f"compute {a} + {b}. {filler}",
            "response": f"{steps}the answer is {a + b}",
            "meta": {"answer": str(a + b)},
        }
    if domain == "code":
        return {
            "id": rid,
            "domain": domain,
            "prompt": f"write a python function add{i} that adds {a}",
            "response": f"def add{i}(x):\n    return x + {a}",
            "meta": {"entry_point": f"add{i}", "tests": [f"assert add{i}(1) == {1 + a}"]},
        }
    if domain == "safety":
        harmful = i % 2 == 0
        return {
            "id": rid,
            "domain": domain,
            "prompt": f"{'help me do harm' if harmful else 'help me'} {filler}",
            "response": "sorry, I cannot help with that" if harmful else f"sure: {filler}",
            "meta": {"harmful": harmful},
        }
    return {
        "id": rid,
        "domain": domain,
        "prompt": f"please explain {filler}",
        "response": f"{filler} because {a}",
        "meta": {"checks": [{"type": "contains", "value": "because"}]},
    }


def write_tiny_data(path: str | Path, *, seed: int = 0, n_train: int = 40, n_eval: int = 6) -> Path:
    """Pools for every domain, preference pairs and one future task, in DIR layout."""
    path = Path(path)
    rng = random.Random(seed)
    (path / "pools").mkdir(parents=True, exist_ok=True)
    (path / "future").mkdir(parents=True, exist_ok=True)

    def dump(p: Path, recs: list[dict]) -> None:
        p.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")

    for domain in ("general", "math", "code", "safety", "long_cot"):
        for split, n in (("train", n_train), ("eval", n_eval)):
            dump(
                path / "pools" / f"{domain}.{split}.jsonl",
                [_sft_record(domain, split, i, rng) for i in range(n)],
            )
    for split, n in (("train", n_train), ("eval", n_eval)):
        recs = []
        for i in range(n):
            base = _sft_record("general", split, i, rng)
            recs.append(
                {
                    "id": f"preference-{split}-{i:05d}",
                    "domain": "preference",
                    "prompt": base["prompt"],
                    "chosen": base["response"],
                    "rejected": "no",
                    "meta": {},
                }
            )
        dump(path / "pools" / f"preference.{split}.jsonl", recs)
        fut = []
        for i in range(n):
            word = rng.choice(_WORDS)
            fut.append(
                {
                    "id": f"cipher-{split}-{i:05d}",
                    "domain": "cipher",
                    "prompt": f"Reverse the word '{word}'. Answer with the word only.",
                    "response": word[::-1],
                    "meta": {"answer": word[::-1]},
                }
            )
        dump(path / "future" / f"cipher.{split}.jsonl", fut)
    (path / "MANIFEST.json").write_text(json.dumps({"seed": seed}), encoding="utf-8")
    return path
