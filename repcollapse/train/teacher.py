"""Teacher-forced measures on held-out references: one forward pass per batch of items.

Per response token (the labelled tokens of ``encode_sft``): the NLL, the max probability and
whether the argmax is the target. Per item: the summed NLL and its token count (the units of
the SE: tokens of one item are correlated, items are not), and the answer log-probability where
the item has a short answer inside its reference (``meta['answer']``: a GSM8K/CHAMP final
number, a factual answer, a future task's word): the summed log-probability of the reference
tokens that spell the answer, given the prompt and the reference before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from repcollapse.train.pools import IGNORE


def autocast(device: str) -> Any:
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def pad_right(
    batch: Sequence[Mapping[str, list[int]]], pad: int, device: str
) -> dict[str, torch.Tensor]:
    width = max(len(e["input_ids"]) for e in batch)
    ids = [e["input_ids"] + [pad] * (width - len(e["input_ids"])) for e in batch]
    labels = [e["labels"] + [IGNORE] * (width - len(e["labels"])) for e in batch]
    mask = [[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in batch]
    return {
        "input_ids": torch.tensor(ids, device=device),
        "labels": torch.tensor(labels, device=device),
        "attention_mask": torch.tensor(mask, device=device),
    }


def selected_logits(
    model: Any, input_ids: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    """Logits (n_kept, vocab) at the positions ``keep`` (bool, batch x seq), row-major.

    The vocabulary projection dominates teacher-forced evaluation (49k-262k classes); models
    whose forward takes a boolean ``logits_to_keep`` project just the kept positions.
    """
    try:
        logits = model(input_ids=input_ids, attention_mask=mask, logits_to_keep=keep).logits
        if logits.dim() == 2 and logits.shape[0] == int(keep.sum()):
            return logits.float()
    except (TypeError, IndexError, RuntimeError):
        pass
    return model(input_ids=input_ids, attention_mask=mask).logits[keep].float()


def answer_positions(
    tok: Any, record: Mapping[str, Any], enc: Mapping[str, list[int]]
) -> list[int]:
    """Indices into ``enc['input_ids']`` of the labelled tokens spelling the record's short
    answer (its last occurrence in the reference response); [] when there is none."""
    answer = (record.get("meta") or {}).get("answer")
    response, prompt = record.get("response"), record.get("prompt")
    if answer is None or not isinstance(response, str) or not isinstance(prompt, str):
        return []
    answer = str(answer).strip()
    k = response.rfind(answer) if answer else -1
    if k < 0:
        return []
    msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    start = text.find(response, max(text.find(prompt), 0) + len(prompt))
    if start < 0:
        return []
    try:
        full = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):  # a slow tokenizer has no offsets
        return []
    ids, labels = enc["input_ids"], enc["labels"]
    if list(full["input_ids"][: len(ids)]) != list(ids):
        return []
    a0, a1 = start + k, start + k + len(answer)
    return [
        j
        for j, (s, e) in enumerate(full["offset_mapping"][: len(ids)])
        if s < a1 and e > a0 and labels[j] != IGNORE
    ]


@torch.no_grad()
def token_stats(
    model: Any,
    tok: Any,
    encoded: Sequence[Mapping[str, list[int]]],
    *,
    device: str,
    batch_size: int = 4,
    answers: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Flat per-token tensors ``nll``, ``conf``, ``correct``, ``item`` (the item each token
    belongs to) and per-item lists ``nll_sum``, ``n_tokens``, ``answer_logprob`` (None where
    ``answers[i]`` is empty or not given).

    Items are batched by length (shortest first) so a batch pads to about its own rows' width;
    every output stays in the order of ``encoded`` (the flat tensors item by item, each item's
    tokens in sequence order)."""
    was_training = model.training
    model.eval()
    nll, conf, correct, item = [], [], [], []
    n = len(encoded)
    nll_sum, n_tokens = [0.0] * n, [0] * n
    ans_lp: list[float | None] = [None] * n
    by_len = sorted(range(n), key=lambda j: (len(encoded[j]["input_ids"]), j))
    for i in range(0, n, batch_size):
        batch = by_len[i : i + batch_size]
        b = pad_right([encoded[j] for j in batch], tok.pad_token_id, device)
        target = b["labels"][:, 1:]
        keep = torch.zeros_like(b["labels"], dtype=torch.bool)
        keep[:, :-1] = target != IGNORE  # position t predicts token t + 1
        with autocast(device):
            logits = selected_logits(model, b["input_ids"], b["attention_mask"], keep)
        lp = torch.log_softmax(logits, dim=-1)
        where = keep.nonzero()  # (row, t), row-major like the boolean selection
        tgt = b["labels"][where[:, 0], where[:, 1] + 1]
        tok_nll = -lp.gather(1, tgt[:, None])[:, 0]
        mx, arg = lp.max(dim=-1)
        nll.append(tok_nll)
        conf.append(mx.exp())
        correct.append((arg == tgt).float())
        rows = torch.tensor(batch, device=where.device)[where[:, 0]]
        item.append(rows)
        rows_l, t_l, nll_l = rows.tolist(), (where[:, 1] + 1).tolist(), tok_nll.double().tolist()
        wanted = {r: set(answers[r]) for r in batch if answers and answers[r]}
        for r, t, v in zip(rows_l, t_l, nll_l, strict=True):
            nll_sum[r] += v
            n_tokens[r] += 1
            if r in wanted and t in wanted[r]:
                ans_lp[r] = (ans_lp[r] or 0.0) - v
    model.train(was_training)

    def cat(xs: list[torch.Tensor], dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.cat(xs).cpu().to(dtype) if xs else torch.zeros(0, dtype=dtype)

    items = cat(item, torch.long)
    back = torch.sort(items, stable=True).indices  # the items' order, tokens in order within
    return {
        "nll": cat(nll)[back],
        "conf": cat(conf)[back],
        "correct": cat(correct)[back],
        "item": items[back],
        "nll_sum": nll_sum,
        "n_tokens": n_tokens,
        "answer_logprob": ans_lp,
    }


@torch.no_grad()
def response_logprob(
    model: Any, enc: Mapping[str, list[int]], completion: list[int], device: str
) -> float:
    """Summed log-probability of ``completion`` after the prompt (teacher forced)."""
    ids = enc["prompt_ids"] + completion
    x = torch.tensor([ids], device=device)
    keep = torch.zeros_like(x, dtype=torch.bool)
    keep[0, len(enc["prompt_ids"]) - 1 : -1] = True
    with autocast(device):
        logits = selected_logits(model, x, torch.ones_like(x), keep)
    tgt = torch.tensor(completion, device=logits.device)
    return float(torch.log_softmax(logits, dim=-1).gather(1, tgt[:, None]).sum())


def expected_calibration_error(
    conf: torch.Tensor, correct: torch.Tensor, bins: int = 15
) -> float | None:
    """ECE with ``bins`` equal-width confidence bins (weights = bin counts / N)."""
    n = conf.numel()
    if n == 0:
        return None
    idx = torch.clamp((conf * bins).long(), max=bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        cnt = int(sel.sum())
        if cnt:
            ece += cnt / n * abs(float(conf[sel].mean()) - float(correct[sel].mean()))
    return ece
