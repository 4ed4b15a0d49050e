"""Probe tokenization: chat rendering, span labels per token, splits, and the token sampler.

Rendering. With a chat template the example is rendered as [user: prompt, assistant: reference]
(``apply_chat_template(..., tokenize=False)``) and tokenized without extra special tokens (the
template has them); without one it is ``prompt + "\\n" + reference`` with the tokenizer's own
special tokens (BOS). The reference's character range is located inside the rendered text.

Span labels (one per token, the finest that applies; repcollapse.store_schema.records documents the names):
a token whose first character lies before the reference is ``prompt`` (chat-template tokens
included, and a token straddling the boundary); a reference token gets the first span of
``SPAN_PRIORITY`` that overlaps it in at least one non-whitespace character (so a token " word"
whose leading space ends the previous span belongs to the span that starts at "word"); a
whitespace-only token gets the first span that overlaps it at all; else ``response``; template tokens after the reference (end-of-turn) are ``response``.

Splits. ``fit``/``heldout`` per example, stratified by domain: in each domain a seeded
permutation puts round(25%) of the examples (at least one, never all, when the domain has two
or more) in ``heldout``.

Sinks. ``is_sink`` is position 0 of every sequence: the attention-sink token whose hidden state
is orders of magnitude larger than the rest in the middle layers (about 29,000 in SmolLM2).

Token sampler. By default every token is stored. ``token_cap_per_span=N`` keeps at most N tokens
per (domain, span) cell, drawn without replacement by a RNG seeded with (seed, domain index,
span index), so a cell's choice does not depend on any other cell. Only the stored positions are
subsampled: an example is run through the model up to its last stored token (``run_length``;
in a causal model a token's states depend only on the tokens before it, so the tokens after the
last stored one change nothing stored, and the target of the last stored token is read from the
uncut sequence), and an example with no kept token is not run at all.

Store order is (domain, example, position): domains in ``repcollapse.store_schema.records.domain_order``
(the six paper domains, then a user's own, by name),
examples in corpus-file order within a domain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from repcollapse.store_schema.records import (
    SPAN_PRIORITY,
    SPANS,
    ProbeRecord,
    Span,
    domain_order,
)

HELDOUT_FRACTION = 0.25


@dataclass(frozen=True)
class TokenizedExample:
    """One probe (or generated) sequence, truncated, with its labels and stored positions."""

    id: str
    domain: str
    split: str
    input_ids: np.ndarray
    """(length,) int64 token ids of the whole (truncated) sequence."""
    spans: np.ndarray
    """(length,) span label per token."""
    keep: np.ndarray
    """Ascending positions stored in the store (all positions unless a cap applies)."""

    @property
    def run_length(self) -> int:
        """Tokens the forward pass needs: up to and including the last stored position."""
        return int(self.keep[-1]) + 1 if len(self.keep) else 0


@dataclass(frozen=True)
class TokenPlan:
    """Examples in store order and the token coordinates of every stored token."""

    examples: list[TokenizedExample]
    coords: dict[str, np.ndarray]

    @property
    def n_tokens(self) -> int:
        return len(self.coords["position"])


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render(tokenizer: Any, prompt: str, reference: str) -> tuple[str, int, int]:
    """(text, ref_start, lead): reference char i sits at text index ref_start + i - lead.

    ``lead`` is the number of leading characters of the reference a template stripped (0 when
    the template keeps the reference verbatim).
    """
    if not has_chat_template(tokenizer):
        return f"{prompt}\n{reference}", len(prompt) + 1, 0
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reference}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    head = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    # Search after the prompt so a reference that repeats prompt text is found in the answer.
    start = len(head) if text.startswith(head) else max(0, text.find(prompt) + len(prompt))
    for candidate in (reference, reference.lstrip(), reference.strip()):
        pos = text.find(candidate, start) if candidate else -1
        if pos >= 0:
            return (
                text,
                pos,
                len(reference) - len(reference.lstrip()) if candidate != reference else 0,
            )
    raise ValueError(
        f"the chat template does not contain the reference verbatim; expected it after char {start} "
        f"of {text[:200]!r}..."
    )


def label_tokens(
    offsets: Sequence[tuple[int, int]],
    ref_start: int,
    lead: int,
    reference: str,
    spans: Sequence[Span],
) -> np.ndarray:
    """Span label per token from its character offsets (see the module docstring)."""
    # Non-whitespace prefix counts of the reference: overlap [a, b) has a visible char iff > 0.
    visible = np.concatenate([[0], np.cumsum([not c.isspace() for c in reference])])
    ref_len = len(reference)
    rank = {name: i for i, name in enumerate(SPAN_PRIORITY)}
    ordered = sorted(spans, key=lambda s: rank.get(s.name, len(rank)))
    labels = []
    for s, e in offsets:
        if s < ref_start:
            labels.append("prompt")
            continue
        a, b = s - ref_start + lead, e - ref_start + lead
        if a >= ref_len:
            labels.append("response")  # end-of-turn tokens after the reference
            continue
        hits = [(sp, max(a, sp.start), min(b, sp.end)) for sp in ordered]
        hits = [(sp, lo, hi) for sp, lo, hi in hits if lo < hi]
        shown = [sp for sp, lo, hi in hits if visible[hi] - visible[lo] > 0]
        # A visible overlap decides; a whitespace-only token takes any span that covers it.
        best = shown[0] if shown else (hits[0][0] if hits else None)
        labels.append(best.name if best else "response")
    return np.array(labels, dtype=object).astype(str) if labels else np.array([], dtype=str)


def tokenize_record(
    tokenizer: Any, rec: ProbeRecord, max_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, span labels), truncated to ``max_length`` tokens."""
    text, ref_start, lead = render(tokenizer, rec.prompt, rec.reference)
    enc = tokenizer(
        text,
        return_offsets_mapping=True,
        add_special_tokens=not has_chat_template(tokenizer),
    )
    ids = np.asarray(enc["input_ids"], dtype=np.int64)[:max_length]
    offsets = [tuple(o) for o in enc["offset_mapping"]][:max_length]
    # Special tokens the tokenizer adds itself (BOS) have (0, 0) offsets: before the reference.
    return ids, label_tokens(offsets, ref_start, lead, rec.reference, rec.spans)


def assign_splits(records: Sequence[ProbeRecord], seed: int) -> dict[str, str]:
    """Example id -> 'fit' or 'heldout', stratified by domain (module docstring)."""
    split: dict[str, str] = {}
    # domain_order: the paper domains keep their indices (and seeds); a user's domains follow.
    for d_index, domain in enumerate(domain_order(r.domain for r in records)):
        ids = sorted(r.id for r in records if r.domain == domain)  # independent of file order
        n = len(ids)
        n_held = int(round(HELDOUT_FRACTION * n))
        if n >= 2:
            n_held = min(max(n_held, 1), n - 1)
        perm = np.random.default_rng([seed, d_index]).permutation(n)
        held = {ids[i] for i in perm[:n_held]}
        split.update({i: "heldout" if i in held else "fit" for i in ids})
    return split


def store_order(records: Sequence[ProbeRecord]) -> list[ProbeRecord]:
    """Records sorted by domain (DOMAINS order), file order within a domain (stable sort)."""
    index = {d: i for i, d in enumerate(domain_order(r.domain for r in records))}
    return sorted(records, key=lambda r: index[r.domain])


def sample_positions(
    domains: Sequence[str], spans: Sequence[np.ndarray], cap: int | None, seed: int
) -> list[np.ndarray]:
    """Kept positions per example: all, or at most ``cap`` per (domain, span) cell."""
    if cap is None:
        return [np.arange(len(s)) for s in spans]
    if cap < 1:
        raise ValueError(f"token_cap_per_span: expected a positive integer or None, found {cap}")
    keep: list[list[np.ndarray]] = [[] for _ in spans]
    for d_index, domain in enumerate(domain_order(domains)):
        members = [i for i, d in enumerate(domains) if d == domain]
        for s_index, span in enumerate(SPANS):
            # Candidate (example, position) pairs of the cell in store order.
            cand = [(i, p) for i in members for p in np.flatnonzero(spans[i] == span)]
            if len(cand) > cap:
                rng = np.random.default_rng([seed, d_index, s_index])
                chosen = np.sort(rng.choice(len(cand), size=cap, replace=False))
                cand = [cand[j] for j in chosen]
            for i, p in cand:
                keep[i].append(np.array([p]))
    return [
        np.sort(np.concatenate(k)).astype(np.int64) if k else np.zeros(0, np.int64) for k in keep
    ]


def build_plan(
    tokenizer: Any,
    records: Sequence[ProbeRecord],
    *,
    max_length: int,
    token_cap_per_span: int | None,
    seed: int,
) -> TokenPlan:
    """Tokenize the probe corpus and lay its tokens out in store order."""
    split = assign_splits(records, seed)
    ordered = store_order(records)
    tokenized = [tokenize_record(tokenizer, r, max_length) for r in ordered]
    keep = sample_positions(
        [r.domain for r in ordered], [labels for _, labels in tokenized], token_cap_per_span, seed
    )
    examples = [
        TokenizedExample(r.id, r.domain, split[r.id], ids, labels, k)
        for r, (ids, labels), k in zip(ordered, tokenized, keep, strict=True)
        if len(k)
    ]
    return TokenPlan(examples, token_coords(examples))


def token_coords(examples: Sequence[TokenizedExample]) -> dict[str, np.ndarray]:
    """repcollapse.store_schema.schema.TOKEN_COORDS for the kept tokens of ``examples`` (in that order)."""
    parts: dict[str, list[np.ndarray]] = {
        k: []
        for k in (
            "example",
            "domain",
            "span",
            "position",
            "token_id",
            "target_id",
            "split",
            "is_sink",
        )
    }
    for ex in examples:
        n = len(ex.keep)
        target = np.append(ex.input_ids[1:], -1)
        parts["example"].append(np.full(n, ex.id, dtype=object))
        parts["domain"].append(np.full(n, ex.domain, dtype=object))
        parts["span"].append(ex.spans[ex.keep].astype(object))
        parts["position"].append(ex.keep.astype(np.int32))
        parts["token_id"].append(ex.input_ids[ex.keep].astype(np.int32))
        parts["target_id"].append(target[ex.keep].astype(np.int32))
        parts["split"].append(np.full(n, ex.split, dtype=object))
        parts["is_sink"].append(ex.keep == 0)
    out = {}
    for key, chunks in parts.items():
        arr = np.concatenate(chunks) if chunks else np.zeros(0)
        out[key] = arr.astype(str) if arr.dtype == object else arr
    return out


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, str]:
    """Root attr ``tokenizer``: name, sha256 of the vocabulary, sha256 of the chat template."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    template = getattr(tokenizer, "chat_template", None) or ""
    return {
        "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
        "vocab_sha256": hashlib.sha256(vocab.encode("utf-8")).hexdigest(),
        "chat_template_sha256": hashlib.sha256(str(template).encode("utf-8")).hexdigest(),
    }
