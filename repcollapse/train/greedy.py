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
from transformers.cache_utils import DynamicLayer

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


class _RoomLayer(DynamicLayer):
    """A full-attention cache layer whose keys/values sit in a buffer with room for the tokens
    still to decode: each step writes its key/value in place, where ``DynamicLayer``
    concatenates the whole cache per layer per step (a quarter of the CPU time of a decoding
    step of SmolLM2 on the demo's prompts). ``keys``/``values`` are views of the filled part,
    so attention reads the same numbers."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int) -> None:
        super().__init__()
        b, h, n, d = keys.shape
        self._k = keys.new_zeros((b, h, n + room, d))
        self._v = values.new_zeros((b, h, n + room, values.shape[-1]))
        self._k[:, :, :n], self._v[:, :, :n] = keys, values
        self._n = n
        self.device = keys.device
        self.is_initialized = True
        self._views()

    def _views(self) -> None:
        self.keys, self.values = self._k[:, :, : self._n], self._v[:, :, : self._n]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m = key_states.shape[-2]
        if self._n + m > self._k.shape[-2]:  # out of room: double it
            grow = max(m, self._k.shape[-2])
            self._k = torch.cat(
                [self._k, self._k.new_zeros((*self._k.shape[:2], grow, self._k.shape[-1]))], dim=2
            )
            self._v = torch.cat(
                [self._v, self._v.new_zeros((*self._v.shape[:2], grow, self._v.shape[-1]))], dim=2
            )
        self._k[:, :, self._n : self._n + m] = key_states
        self._v[:, :, self._n : self._n + m] = value_states
        self._n += m
        self._views()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k, self._v = self._k[indices], self._v[indices]
        self._views()


def prefill_groups(lengths: Sequence[int], slack: float = 1.25) -> list[list[int]]:
    """Indices of ``lengths`` sorted by length, cut into groups whose left-padded prefill costs at
    most ``slack`` times their real tokens (a new group starts where the next prompt would push
    the group's width x rows past that)."""
    groups: list[list[int]] = []
    total = 0
    for i in sorted(range(len(lengths)), key=lambda j: (lengths[j], j)):
        n = lengths[i]
        g = groups[-1] if groups else None
        if g is not None and n * (len(g) + 1) <= slack * (total + n):
            g.append(i)
            total += n
        else:
            groups.append([i])
            total = n
    return groups


def _left_pad(
    prompts: Sequence[Sequence[int]], rows: Sequence[int], width: int, pad_id: int, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor(
        [[pad_id] * (width - len(prompts[i])) + list(prompts[i]) for i in rows], device=device
    )
    mask = torch.tensor(
        [[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in rows], device=device
    )
    return ids, mask


def _mergeable(cache: Any) -> bool:
    """Only plain full-attention layers can be left-padded and stacked (a sliding-window layer
    keeps a window that depends on its own width)."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)


def _merge(model: Any, parts: Sequence[tuple[Any, int]], width: int, room: int) -> Any:
    """One cache of every part's rows, in part order, each left-padded with zero keys/values to
    ``width`` (the attention mask gives those positions weight exactly zero), with ``room``
    positions for the decoded tokens (``_RoomLayer``)."""
    merged = _new_cache(model)
    if not _mergeable(merged) or len(merged.layers) != len(parts[0][0].layers):
        raise RuntimeError("greedy decoding: cannot stack the prefill caches of this model")
    for li in range(len(merged.layers)):
        ks, vs = [], []
        for cache, w in parts:
            src = cache.layers[li]
            ks.append(torch.nn.functional.pad(src.keys, (0, 0, width - w, 0)))
            vs.append(torch.nn.functional.pad(src.values, (0, 0, width - w, 0)))
        merged.layers[li] = _RoomLayer(torch.cat(ks), torch.cat(vs), room)
    return merged


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
    slack: float | None = 1.25,
) -> tuple[list[list[int]], int]:
    """Generated token ids per prompt (end-of-sequence dropped) and the decoding steps run.

    The prompts are read (prefill) in groups of similar length (``prefill_groups``; ``slack``
    None: one group of all, left-padded to the longest prompt): a batch mixing a 40-token
    question with a 350-token HumanEval prompt would otherwise pay the long prompt's width for
    every row. The groups' caches are then left-padded to one width and stacked, so decoding
    runs one batch whatever the groups (a decoding step on a CPU costs about the same for few or
    many rows). Position ids count real tokens only (as ``generate`` does). ``stops[i]`` is
    checked on ``decode(tokens)`` after every new token of row i. The tokens of a row that stops
    are exactly the first tokens it would have generated without the rule.
    """
    n = len(prompts)
    if len(caps) != n or (stops is not None and len(stops) != n):
        raise ValueError(f"greedy_batch: {len(caps)} caps / stops for {n} prompts")
    if slack is not None and not slack >= 1.0:
        raise ValueError(f"greedy_batch: slack must be >= 1 or None, got {slack!r}")
    out: list[list[int]] = [[] for _ in range(n)]
    eos = {eos_id} if isinstance(eos_id, int) else set(eos_id or ())
    todo = [i for i in range(n) if caps[i] > 0]
    if not todo:
        return out, 0
    ctx = autocast if autocast is not None else torch.autocast("cpu", enabled=False)
    key = _cache_kwarg(model)
    lengths = [len(prompts[i]) for i in todo]
    if slack is None or not _mergeable(_new_cache(model)):
        groups = [list(range(len(todo)))]
    else:
        groups = prefill_groups(lengths, slack)
    width = max(lengths)
    parts: list[tuple[Any, int]] = []
    active: list[int] = []
    nxt: list[int] = []
    for g in groups:
        rows = [todo[j] for j in g]
        w = max(len(prompts[i]) for i in rows)
        ids, mask = _left_pad(prompts, rows, w, pad_id, device)
        cache = _new_cache(model)
        with ctx:
            logits = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True,
                logits_to_keep=1,
                **{key: cache},
            ).logits[:, -1, :]
        nxt += logits.float().argmax(dim=-1).tolist()
        parts.append((cache, w))
        active += rows
    room = max(caps[i] for i in active)
    cache = _merge(model, parts, width, room) if _mergeable(parts[0][0]) else parts[0][0]
    del parts
    mask = _left_pad(prompts, active, width, pad_id, device)[1]
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, -1:]
    steps = 1
    while True:
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
        if not still:
            break
        if len(still) < len(active):
            keep = torch.tensor(still, device=mask.device)
            _select_rows(cache, keep)
            mask, pos = mask[keep], pos[keep]
            nxt = [nxt[r] for r in still]
            active = [active[r] for r in still]
        ids = torch.tensor([[t] for t in nxt], device=mask.device)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        pos = pos + 1
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
    return out, steps
