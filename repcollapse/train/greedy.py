"""Greedy decoding of a batch with a cap and a stop rule per row, dropping finished rows.

``model.generate`` keeps computing a row after it has finished (it pads it) until the whole
batch is done, and it knows one cap per batch. Evaluation batches mix domains whose answers end
at very different lengths (a one-word general answer, a HumanEval body, a GSM8K solution), so
here every row stops at its own cap, at end-of-sequence, or when its stop rule says the part the
scorer reads is complete, and a stopped row leaves the batch and its key/value cache: later
steps cost only the rows still running.

The tokens are the greedy argmax of the same logits as ``generate`` with ``do_sample=False``
(test: identical completions on the tiny model); only the work after a row is done is skipped.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

StopRule = Callable[[str], bool]
"""Given a row's decoded completion so far: True once nothing after it can change its score."""


def _cache_kwarg(model: Any) -> str:
    """transformers 5 renamed ``past_key_values`` to ``cache`` (the old name is deprecated)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(inner.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return DynamicCache(config=inner.config)
    except TypeError:  # older signature
        return DynamicCache()


def _select_rows(cache: Any, keep: torch.Tensor) -> None:
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise RuntimeError(
            f"greedy decoding: the model's cache ({type(cache).__name__}) has no per-layer "
            "storage to drop finished rows from (expected transformers' DynamicCache.layers)"
        )
    for layer in layers:
        layer.batch_select_indices(keep)


@torch.no_grad()
def greedy_batch(
    model: Any,
    prompts: Sequence[Sequence[int]],
    caps: Sequence[int],
    *,
    pad_id: int,
    eos_id: int | Sequence[int] | None,
    device: str,
    decode: Callable[[list[int]], str] | None = None,
    stops: Sequence[StopRule | None] | None = None,
    autocast: Any = None,
) -> tuple[list[list[int]], int]:
    """Generated token ids per prompt (end-of-sequence dropped) and the decoding steps run.

    Prompts are left-padded into one batch; position ids count real tokens only (as
    ``generate`` does). ``stops[i]`` is checked on ``decode(tokens)`` after every new token of
    row i. The tokens of a row that stops are exactly the first tokens it would have generated
    without the rule.
    """
    n = len(prompts)
    if len(caps) != n or (stops is not None and len(stops) != n):
        raise ValueError(f"greedy_batch: {len(caps)} caps / stops for {n} prompts")
    out: list[list[int]] = [[] for _ in range(n)]
    eos = {eos_id} if isinstance(eos_id, int) else set(eos_id or ())
    active = [i for i in range(n) if caps[i] > 0]
    if not active:
        return out, 0
    width = max(len(prompts[i]) for i in active)
    ids = torch.tensor(
        [[pad_id] * (width - len(prompts[i])) + list(prompts[i]) for i in active], device=device
    )
    mask = torch.tensor(
        [[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in active], device=device
    )
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache, key = _new_cache(model), _cache_kwarg(model)
    ctx = autocast if autocast is not None else torch.autocast("cpu", enabled=False)
    steps = 0
    while active:
        with ctx:
            logits = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                use_cache=True,
                logits_to_keep=1,
                **{key: cache},
            ).logits[:, -1, :]
        nxt = logits.float().argmax(dim=-1).tolist()
        steps += 1
        still: list[int] = []
        for row, i in enumerate(active):
            tok_id = int(nxt[row])
            if tok_id in eos:
                continue
            out[i].append(tok_id)
            if len(out[i]) >= caps[i]:
                continue
            rule = stops[i] if stops is not None else None
            if rule is not None and decode is not None and rule(decode(out[i])):
                continue
            still.append(row)
        if len(still) < len(active):
            if not still:
                break
            keep = torch.tensor(still, device=ids.device)
            _select_rows(cache, keep)
            mask, pos = mask[keep], pos[keep]
            nxt = [nxt[r] for r in still]
            active = [active[r] for r in still]
        ids = torch.tensor([[t] for t in nxt], device=mask.device)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        pos = pos[:, -1:] + 1
    return out, steps
