"""Token selections and per-chunk plans, computed once from the token coordinates.

Each token has one domain and one span label, so (domain, span) cells partition the kept tokens
(attention sinks are dropped unless ``include_sinks``). The accumulator sums per cell; every
coarser selection (a domain, a span, the whole probe) is a union of cells. A chunk plan lists,
for one store chunk of tokens, the kept tokens sorted by cell (so that each cell is one
contiguous row range of the converted buffer), the subsample rows it contributes, and the
example pieces for the per-sequence effective rank.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

ALL = "all"

Selection = tuple[str, str]
"""(domain, span); 'all' for either means no restriction."""


@dataclass(frozen=True)
class SeqBatch:
    """Examples fully inside one chunk with ``L`` kept rows each: their centered token Gram is
    one batched product; span subsets are then sub-blocks of it (``SpanBatch``)."""

    index: np.ndarray
    """(m, L) row positions in the chunk buffer (cell order)."""
    slot: np.ndarray
    """(m,) example slot in the chunk (row of the padded Gram stack)."""
    domain: np.ndarray
    """(m,) index of the example's (group, domain): group x n_domains + domain (the domain alone
    without uncertainty)."""


@dataclass(frozen=True)
class SpanBatch:
    """Span subsets (all of size Ls) of examples inside the chunk, as positions in the example."""

    slot: np.ndarray
    """(m,) example slot."""
    local: np.ndarray
    """(m, Ls) positions within the example's rows."""
    domain: np.ndarray
    span: np.ndarray


@dataclass(frozen=True)
class SeqPiece:
    """Rows of an example that is not fully inside this chunk."""

    example: int
    domain: int
    rows: np.ndarray
    """Row positions in the chunk buffer, in token order."""
    spans: np.ndarray
    """Span index of each row."""
    last: bool
    """The example ends in this chunk."""


@dataclass(frozen=True)
class ChunkPlan:
    t0: int
    t1: int
    order: np.ndarray
    """Chunk-relative indices of kept tokens, sorted by cell (stable: token order within)."""
    segments: tuple[tuple[int, int, int], ...]
    """(cell id, start, stop) of each contiguous run of ``order`` holding one cell."""
    domain_runs: tuple[tuple[int, int, int], ...]
    """(domain index, start, stop) of each domain's run of ``order`` (cells sort by domain first)."""
    span_runs: tuple[tuple[int, tuple[tuple[int, int], ...]], ...]
    """Per span present: (span index, its runs [a, b) of ``order``), one run per domain."""
    sample_rel: np.ndarray
    """Chunk-relative indices of subsampled tokens, and their slots in the subsample."""
    sample_slot: np.ndarray
    seq_batches: tuple[SeqBatch, ...]
    span_batches: tuple[SpanBatch, ...]
    seq_slots: int
    """Examples fully inside the chunk; ``seq_len``: the most kept rows of one of them."""
    seq_len: int
    seq_pieces: tuple[SeqPiece, ...]


@dataclass(frozen=True)
class TokenPlan:
    n_tokens: int
    token_chunk: int
    include_sinks: bool
    domains: tuple[str, ...]
    spans: tuple[str, ...]
    cells: tuple[tuple[int, int], ...]
    """(domain index, span index) of each cell id."""
    cell_count: np.ndarray
    chunks: tuple[ChunkPlan, ...]
    sample_tokens: np.ndarray
    sample_domain: np.ndarray
    sample_fit: np.ndarray
    """True where the subsampled token's example is in split 'fit' (else 'heldout')."""
    target_ok: np.ndarray
    """Kept tokens that have a next-token target (function metrics)."""
    cell_of_token: np.ndarray
    """Cell id per token, -1 where excluded."""
    n_groups: int = 1
    """Example groups of the jackknife (``example_groups``); 1: no uncertainty."""
    cell_group: np.ndarray | None = None
    """Example group of each cell (with ``n_groups`` > 1 a cell is a (domain, span, group)
    triple: ``cells`` lists its (domain, span), once per group that has tokens there)."""

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    @property
    def n_gram_blocks(self) -> int:
        """d x d Gram matrices a pass keeps per member: one per domain and one per span, per
        example group."""
        return self.n_groups * (len(self.domains) + len(self.spans))

    def group_of_cells(self) -> np.ndarray:
        return np.zeros(self.n_cells, np.int64) if self.cell_group is None else self.cell_group

    def selections(self) -> list[Selection]:
        """Every reported selection: the whole probe, each domain, each span."""
        return [(ALL, ALL), *[(d, ALL) for d in self.domains], *[(ALL, s) for s in self.spans]]

    def cells_of(self, sel: Selection) -> np.ndarray:
        dom, span = sel
        ids = [
            i
            for i, (di, si) in enumerate(self.cells)
            if (dom == ALL or self.domains[di] == dom) and (span == ALL or self.spans[si] == span)
        ]
        if not ids and (dom not in (ALL, *self.domains) or span not in (ALL, *self.spans)):
            raise KeyError(
                f"selection {sel!r}: domain must be one of {['all', *self.domains]} and span "
                f"one of {['all', *self.spans]}"
            )
        return np.asarray(ids, dtype=np.int64)

    def selection_index(self, sel: Selection) -> int:
        return self.selections().index(sel)


def _codes(values: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """Labels in order of first appearance (store order), and the code of each value."""
    labels = tuple(dict.fromkeys(values.tolist()))
    lookup = {v: i for i, v in enumerate(labels)}
    return labels, np.fromiter((lookup[v] for v in values.tolist()), np.int64, len(values))


def sample_tokens(
    keep: np.ndarray, dom_code: np.ndarray, n_domains: int, per_domain: int, seed: int
) -> np.ndarray:
    """Seeded per-domain subsample of kept tokens (at most ``per_domain`` each), sorted."""
    picked = []
    for di in range(n_domains):
        pool = np.flatnonzero(keep & (dom_code == di))
        if len(pool) > per_domain:
            pool = np.random.default_rng([seed, di]).choice(pool, per_domain, replace=False)
        picked.append(pool)
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def example_groups(example: np.ndarray, domain: np.ndarray, n_groups: int) -> np.ndarray:
    """The jackknife group of each token: within each domain, the examples in store order are
    cut into ``n_groups`` contiguous runs of (nearly) equal counts - example j of a domain's m
    goes to group floor(j n_groups / m) - so every group holds ~1/n_groups of every domain's
    examples, and a chunk of tokens meets one or two groups (its products stay few)."""
    _, ex_code = _codes(np.asarray(example).astype(str))
    _, dom_code = _codes(np.asarray(domain).astype(str))
    ex_dom = np.zeros(ex_code.max() + 1 if len(ex_code) else 0, np.int64)
    ex_dom[ex_code] = dom_code
    group_of_ex = np.zeros(len(ex_dom), np.int64)
    for di in np.unique(ex_dom):
        members = np.flatnonzero(ex_dom == di)  # examples are numbered in store order
        group_of_ex[members] = np.arange(len(members)) * n_groups // len(members)
    return group_of_ex[ex_code]


def build_plan(
    coords: dict[str, np.ndarray],
    token_chunk: int,
    *,
    include_sinks: bool = False,
    sample_per_domain: int = 300,
    seed: int = 0,
    n_groups: int = 1,
) -> TokenPlan:
    """The plan for a store's token coordinates (``coords``: example, domain, span, split,
    is_sink, target_id as arrays). ``n_groups`` > 1: cells are split by example group
    (``example_groups``), for the jackknife of ``repcollapse.analyze.engine.uncertainty``."""
    n = len(coords["domain"])
    domains, dom_code = _codes(np.asarray(coords["domain"]).astype(str))
    spans, span_code = _codes(np.asarray(coords["span"]).astype(str))
    keep = np.ones(n, bool) if include_sinks else ~np.asarray(coords["is_sink"]).astype(bool)
    group = (
        example_groups(coords["example"], coords["domain"], n_groups)
        if n_groups > 1
        else np.zeros(n, np.int64)
    )
    key = (dom_code * len(spans) + span_code) * n_groups + group
    present = np.unique(key[keep])
    cells = tuple(
        (int(k // n_groups // len(spans)), int(k // n_groups % len(spans))) for k in present
    )
    cell_group = (present % n_groups).astype(np.int64)
    cell_of_key = {int(k): i for i, k in enumerate(present)}
    cell_of_token = np.full(n, -1, np.int64)
    cell_of_token[keep] = [cell_of_key[int(k)] for k in key[keep]]
    cell_count = np.bincount(cell_of_token[keep], minlength=len(cells)).astype(np.int64)

    samples = sample_tokens(keep, dom_code, len(domains), sample_per_domain, seed)
    split = np.asarray(coords["split"]).astype(str)
    ex_labels, ex_code = _codes(np.asarray(coords["example"]).astype(str))
    runs = 1 + int(np.count_nonzero(ex_code[1:] != ex_code[:-1])) if n else 0
    if runs != len(ex_labels):
        raise ValueError(
            f"token coord 'example': each example must be one contiguous token range "
            f"(store order is (domain, example, position)); found {runs} runs for "
            f"{len(ex_labels)} examples"
        )
    ex_last = np.zeros(len(ex_labels), np.int64)
    ex_last[ex_code] = np.arange(n)  # last token index of each example (including sinks)

    chunks = []
    for t0 in range(0, n, token_chunk):
        t1 = min(n, t0 + token_chunk)
        chunks.append(
            _chunk_plan(
                t0,
                t1,
                keep,
                cell_of_token,
                cells,
                dom_code + len(domains) * group,  # per-sequence sums by (group, domain)
                span_code,
                ex_code,
                ex_last,
                samples,
                len(spans),
            )
        )
    target_ok = keep & (np.asarray(coords["target_id"]) >= 0)
    return TokenPlan(
        n_tokens=n,
        token_chunk=token_chunk,
        include_sinks=include_sinks,
        domains=domains,
        spans=spans,
        cells=cells,
        cell_count=cell_count,
        chunks=tuple(chunks),
        sample_tokens=samples,
        sample_domain=dom_code[samples],
        sample_fit=split[samples] == "fit",
        target_ok=target_ok,
        cell_of_token=cell_of_token,
        n_groups=n_groups,
        cell_group=cell_group,
    )


def _chunk_plan(
    t0: int,
    t1: int,
    keep: np.ndarray,
    cell_of_token: np.ndarray,
    cells: tuple[tuple[int, int], ...],
    dom_code: np.ndarray,
    span_code: np.ndarray,
    ex_code: np.ndarray,
    ex_last: np.ndarray,
    samples: np.ndarray,
    n_spans: int,
) -> ChunkPlan:
    rel = np.flatnonzero(keep[t0:t1])
    cell = cell_of_token[t0:t1][rel]
    order = rel[np.argsort(cell, kind="stable")]
    sorted_cells = cell_of_token[t0:t1][order]
    starts = (
        np.flatnonzero(np.r_[True, sorted_cells[1:] != sorted_cells[:-1]]) if len(order) else []
    )
    bounds = np.r_[starts, len(order)].astype(np.int64).tolist()
    seg_cells = sorted_cells[np.asarray(starts, np.int64)].tolist()
    segments = tuple(zip(seg_cells, bounds[:-1], bounds[1:], strict=True))
    domain_runs: list[tuple[int, int, int]] = []
    runs: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for c, a, b in segments:  # cells sort by domain first: a domain's cells are adjacent
        di, si = cells[c]
        if domain_runs and domain_runs[-1][0] == di:
            domain_runs[-1] = (di, domain_runs[-1][1], b)
        else:
            domain_runs.append((di, a, b))
        runs[si].append((a, b))
    span_runs = tuple((si, tuple(r)) for si, r in sorted(runs.items()))

    lo, hi = np.searchsorted(samples, [t0, t1])
    sample_slot = np.arange(lo, hi, dtype=np.int64)
    sample_rel = samples[lo:hi] - t0

    # Per-sequence rows: buffer position of each kept token, grouped by example.
    pos = np.empty(t1 - t0, np.int64)
    pos[order] = np.arange(len(order))
    by_example: dict[int, list[int]] = defaultdict(list)
    for r in rel:
        by_example[int(ex_code[t0 + r])].append(int(r))
    groups: dict[int, list[tuple[np.ndarray, int, int]]] = defaultdict(list)
    span_groups: dict[int, list[tuple[int, np.ndarray, int, int]]] = defaultdict(list)
    pieces = []
    slot, seq_len = 0, 0
    for ex, rows in by_example.items():
        rows_a = np.asarray(rows, np.int64)
        first_tok = int(np.searchsorted(ex_code, ex, side="left"))
        inside = first_tok >= t0 and ex_last[ex] < t1
        dom = int(dom_code[t0 + rows_a[0]])
        if not inside:
            pieces.append(
                SeqPiece(ex, dom, pos[rows_a], span_code[t0 + rows_a], bool(ex_last[ex] < t1))
            )
            continue
        if len(rows_a) < 2:
            continue
        groups[len(rows_a)].append((pos[rows_a], slot, dom))
        spans_here = span_code[t0 + rows_a]
        for s_ in np.unique(spans_here):
            local = np.flatnonzero(spans_here == s_)
            if len(local) >= 2:
                span_groups[len(local)].append((slot, local, dom, int(s_)))
        seq_len = max(seq_len, len(rows_a))
        slot += 1
    batches = tuple(
        SeqBatch(
            index=np.stack([g[0] for g in items]),
            slot=np.array([g[1] for g in items], np.int64),
            domain=np.array([g[2] for g in items], np.int64),
        )
        for _, items in sorted(groups.items())
    )
    span_batches = tuple(
        SpanBatch(
            slot=np.array([g[0] for g in items], np.int64),
            local=np.stack([g[1] for g in items]),
            domain=np.array([g[2] for g in items], np.int64),
            span=np.array([g[3] for g in items], np.int64),
        )
        for _, items in sorted(span_groups.items())
    )
    return ChunkPlan(
        t0=t0,
        t1=t1,
        order=order,
        segments=segments,
        domain_runs=tuple(domain_runs),
        span_runs=span_runs,
        sample_rel=sample_rel,
        sample_slot=sample_slot,
        seq_batches=batches,
        span_batches=span_batches,
        seq_slots=slot,
        seq_len=seq_len,
        seq_pieces=tuple(pieces),
    )
