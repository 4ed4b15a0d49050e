"""Training pools: reading, tokenising with the chat template, and exact token budgets.

Every stage of a sequence trains on the same number of non-padding tokens. A stage's training
set is built by walking a seeded permutation of its pool (cycling when the pool is exhausted)
and taking examples until the budget is reached; the last example is truncated so that the
total is exact. Examples already used by an earlier stage of the same sequence come last (a
per-domain cursor), so a matched-token control of four general stages sees four different
slices of the general pool.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IGNORE = -100


def read_records(path: str | Path, kind: str = "sft") -> list[dict[str, Any]]:
    """Validated records of one pool file, via ``repcollapse.train.data.load_records`` (the data package)."""
    from repcollapse.train.data import load_records

    records = load_records(Path(path), kind=kind)
    return [_as_dict(r) for r in records]


def _as_dict(rec: Any) -> dict[str, Any]:
    if isinstance(rec, dict):
        return rec
    if dataclasses.is_dataclass(rec):
        return dataclasses.asdict(rec)
    return dict(vars(rec))


# ---------------------------------------------------------------------------------------------
# Tokenisation


def prompt_ids(tok: Any, prompt: str) -> list[int]:
    text = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    return list(tok(text, add_special_tokens=False)["input_ids"])


def conversation_ids(tok: Any, prompt: str, response: str) -> list[int]:
    msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    return list(tok(text, add_special_tokens=False)["input_ids"])


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def encode_sft(
    tok: Any, prompt: str, response: str, max_length: int
) -> dict[str, list[int]] | None:
    """input_ids and labels (-100 on the prompt), truncated to max_length; None if no label left."""
    p = prompt_ids(tok, prompt)
    full = conversation_ids(tok, prompt, response)
    n = _common_prefix(p, full)
    ids = full[:max_length]
    labels = [IGNORE] * min(n, len(ids)) + ids[n:]
    if all(x == IGNORE for x in labels[1:]):
        return None
    return {"input_ids": ids, "labels": labels}


def encode_pair(
    tok: Any, prompt: str, chosen: str, rejected: str, max_length: int
) -> dict[str, list[int]] | None:
    """prompt_ids / chosen_ids / rejected_ids as DPO's collator wants them, within max_length."""
    p = prompt_ids(tok, prompt)
    c = conversation_ids(tok, prompt, chosen)
    r = conversation_ids(tok, prompt, rejected)
    n = min(_common_prefix(p, c), _common_prefix(p, r))
    room = max_length - n
    if room < 1:
        return None
    ch, rj = c[n:][:room], r[n:][:room]
    if not ch or not rj:
        return None
    return {"prompt_ids": p[:n], "chosen_ids": ch, "rejected_ids": rj}


def sft_cost(e: dict[str, list[int]]) -> int:
    return len(e["input_ids"])


def pair_cost(e: dict[str, list[int]]) -> int:
    # DPO runs prompt+chosen and prompt+rejected: the prompt is processed twice.
    return 2 * len(e["prompt_ids"]) + len(e["chosen_ids"]) + len(e["rejected_ids"])


def sft_loss_tokens(e: dict[str, list[int]]) -> int:
    return sum(1 for x in e["labels"][1:] if x != IGNORE)


def truncate_sft(e: dict[str, list[int]], r: int) -> dict[str, list[int]] | None:
    ids, labels = e["input_ids"][:r], e["labels"][:r]
    if all(x == IGNORE for x in labels[1:]):
        return None
    return {"input_ids": ids, "labels": labels}


def truncate_pair(e: dict[str, list[int]], r: int) -> dict[str, list[int]] | None:
    c = r - 2 * len(e["prompt_ids"])
    lc, lr = len(e["chosen_ids"]), len(e["rejected_ids"])
    if c < 2 or c > lc + lr:
        return None
    rj = min(lr, c // 2)
    ch = c - rj
    if ch > lc:
        ch, rj = lc, c - lc
    return {
        "prompt_ids": e["prompt_ids"],
        "chosen_ids": e["chosen_ids"][:ch],
        "rejected_ids": e["rejected_ids"][:rj],
    }


# ---------------------------------------------------------------------------------------------
# Budgeted selection


def _stream(n: int, rng: random.Random, start: int) -> Iterator[int]:
    """Indices of a fixed permutation from position ``start``, re-permuting every later epoch."""
    order = list(range(n))
    rng.shuffle(order)
    pos = start % n
    epoch_rng = random.Random(rng.random())
    while True:
        while pos < n:
            yield order[pos]
            pos += 1
        pos = 0
        epoch_rng.shuffle(order)


@dataclass
class Selection:
    examples: list[dict[str, list[int]]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    tokens: int = 0
    consumed: int = 0
    """How many pool positions were used (advances the domain cursor)."""


def sft_min_cut(e: dict[str, list[int]]) -> int:
    """Fewest leading tokens that still hold one trained label."""
    labels = e["labels"]
    return next(i for i in range(1, len(labels)) if labels[i] != IGNORE) + 1


def pair_min_cut(e: dict[str, list[int]]) -> int:
    return 2 * len(e["prompt_ids"]) + 2


def _fillable(spans: Sequence[tuple[int, int]], budget: int) -> Callable[[int], bool]:
    """ok(r): can r tokens be filled exactly by whole examples plus one truncated example?

    ``spans`` holds (min_cut, cost) per example; an example truncates to any length in that
    range. Dynamic programming over r; once ``max cost`` consecutive lengths are fillable every
    longer one is too (add a max-cost example), so the table stops there.
    """
    import numpy as np

    costs = np.unique(np.array([c for _, c in spans], dtype=np.int64))
    max_c = int(costs[-1])
    trunc = np.zeros(max_c + 2, dtype=np.int64)
    for lo, hi in spans:
        if lo <= hi:
            trunc[lo] += 1
            trunc[hi + 1] -= 1
    trunc_ok = np.cumsum(trunc) > 0
    size = budget + 1
    good = np.zeros(size, dtype=bool)
    good[0] = True
    streak, limit = 0, size
    for r in range(1, size):
        g = bool(r <= max_c and trunc_ok[r])
        if not g:
            prev = r - costs[costs <= r]
            g = bool(good[prev].any())
        good[r] = g
        streak = streak + 1 if g else 0
        if streak >= max_c:
            limit = r + 1
            break
    return lambda r: r >= limit or bool(good[r])


def take_budget(
    encoded: Sequence[dict[str, list[int]] | None],
    ids: Sequence[str],
    budget: int,
    *,
    rng: random.Random,
    start: int = 0,
    cost: Callable[[dict[str, list[int]]], int] = sft_cost,
    truncate: Callable[[dict[str, list[int]], int], dict[str, list[int]] | None] = truncate_sft,
    min_cut: Callable[[dict[str, list[int]]], int] = sft_min_cut,
) -> Selection:
    """Examples until exactly ``budget`` tokens, the last one truncated to fit.

    A whole example is taken only if the remainder it leaves can still be filled exactly (see
    ``_fillable``), so the selection never strands itself a few tokens short.
    """
    usable = [i for i, e in enumerate(encoded) if e is not None]
    if not usable:
        raise ValueError("pool has no usable example (every record is empty after truncation)")
    spans = [(min_cut(encoded[i]), cost(encoded[i])) for i in usable]  # type: ignore[arg-type]
    ok = _fillable(spans, budget)
    sel = Selection()
    stream = _stream(len(usable), rng, start)
    misses = 0
    while sel.tokens < budget and misses <= 2 * len(usable):
        j = usable[next(stream)]
        sel.consumed += 1
        e = encoded[j]
        assert e is not None
        c, rem = cost(e), budget - sel.tokens
        cut = None
        if c <= rem and ok(rem - c):
            cut = e
        elif c > rem and min_cut(e) <= rem:
            cut = truncate(e, rem)
        if cut is None:
            misses += 1
            continue
        misses = 0
        sel.examples.append(cut)
        sel.ids.append(ids[j])
        sel.tokens += cost(cut)
    return sel


# ---------------------------------------------------------------------------------------------
# A data directory


class DataDir:
    """Lazy, cached access to a data directory written by ``repcollapse data build``."""

    def __init__(self, root: str | Path, tok: Any, max_length: int) -> None:
        self.root = Path(root)
        if not (self.root / "pools").is_dir():
            raise FileNotFoundError(
                f"data directory {self.root}: no pools/ folder (run repcollapse data build)"
            )
        self.tok = tok
        self.max_length = max_length
        self._raw: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._enc: dict[tuple[str, str], list[dict[str, list[int]] | None]] = {}

    def pool_path(self, domain: str, split: str) -> Path:
        return self.root / "pools" / f"{domain}.{split}.jsonl"

    def has_pool(self, domain: str, split: str = "train") -> bool:
        return self.pool_path(domain, split).is_file()

    def records(self, domain: str, split: str = "train") -> list[dict[str, Any]]:
        key = (domain, split)
        if key not in self._raw:
            path = self.pool_path(domain, split)
            kind = "preference" if domain == "preference" else "sft"
            self._raw[key] = read_records(path, kind)
        return self._raw[key]

    def encoded(self, domain: str, split: str = "train") -> list[dict[str, list[int]] | None]:
        key = (domain, split)
        if key not in self._enc:
            recs = self.records(domain, split)
            if domain == "preference":
                self._enc[key] = [
                    encode_pair(self.tok, r["prompt"], r["chosen"], r["rejected"], self.max_length)
                    for r in recs
                ]
            else:
                self._enc[key] = [
                    encode_sft(self.tok, r["prompt"], r["response"], self.max_length) for r in recs
                ]
        return self._enc[key]

    def future_tasks(self) -> list[str]:
        folder = self.root / "future"
        if not folder.is_dir():
            return []
        return sorted(p.name[: -len(".train.jsonl")] for p in folder.glob("*.train.jsonl"))

    def future_records(self, task: str, split: str) -> list[dict[str, Any]]:
        key = (f"future:{task}", split)
        if key not in self._raw:
            self._raw[key] = read_records(self.root / "future" / f"{task}.{split}.jsonl", "sft")
        return self._raw[key]
