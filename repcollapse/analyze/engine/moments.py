"""The one-pass accumulator: per (layer, group of checkpoints), every hidden chunk read once.

Read pattern. A pass covers one layer and a group of checkpoints: the targets (whose metrics
are computed) plus their references (base and parent, for CKA). Step ``k`` receives chunk ``k``
of every member at once, so the base's and a parent's chunk is read once and reused by all of
its children in the group; steps run in token order as one chain of dask tasks, so the state
is one accumulator, never a copy per chunk.

Per step and member: the chunk's kept rows are gathered in cell order (domain-major) and cast
float16 -> float64; a fixed per-domain reference (the mean of that domain's rows in the first
chunk that holds the domain, fixed for the rest of the pass) is subtracted, so that the products
do not cancel catastrophically when the mean is large next to the spread. The member's OWN
moments are formed from these float64 rows in both precision modes: per (domain, span) cell the
count, sum, sum of squared norms and sum of unit-normalised raw rows (all O(N d)), and per domain
and per span the Gram matrix (d x d). Why float64 for the own Gram: RankMe takes square roots of
its eigenvalues, which lifts the float32 products' round-off (~eps32 l_max) to visible singular
values, and no floor can tell those from real ones (a floor at that level dropped real singular
values: RankMe 1.4% low on the demo store). The cross-Grams with base and parent, the debias sums'
products and the per-sequence Grams use the working precision (float32 by default: CKA's error
is relative to ||K||, measured within 1e-5 of float64 mode). The products are formed per (domain, span) cell of the gathered
chunk (a contiguous run) and each is added to its domain's and its span's accumulator, so every
row enters one product; when a chunk holds many small cells (the per-call cost of a product is
~140 rows' worth, ``GEMM_OVERHEAD_ROWS``) they are formed per domain run and again per span
instead. Either way no per-cell d x d accumulator is kept (three times the memory). Measured on
the bench store (cells of ~650 rows): a chunk's Gram 13.5 ms per cell vs 22 ms per domain + span
(one whole-chunk product: 9.5 ms), a cross-Gram 19.6 vs 36.9 ms. Every reported selection (the whole
probe = the sum of the domains, a domain, a span) gets its centered scatter exactly from its
Gram and its cells' sums (``selection_scatter``), so the reference only changes rounding. The
seeded row subsample and the per-example token-space Gram
(per-sequence effective rank; examples that straddle chunks are carried to the next step) come
from the same step.

Centered anisotropy needs a second, light pass over the targets' chunks once this one has fixed
every mean (``engine.centered_pass``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from repcollapse.analyze.engine import debias
from repcollapse.analyze.engine.debias import PairSums
from repcollapse.analyze.engine.layer_moments import (  # noqa: F401  (the pass's results, and their users' names)
    CellMoments,
    LayerMoments,
    between_factors,
    cross_scatter,
    group_gram,
    selection_scatter,
)
from repcollapse.analyze.engine.seqrank import erank_of, fold_sequences
from repcollapse.analyze.engine.tokens import ALL, TokenPlan
from repcollapse.analyze.engine.xp import by_name, to_numpy

PRECISIONS: dict[str, type] = {"float32": np.float32, "float64": np.float64}
"""Working precision name -> numpy dtype: the one mapping every pass and driver uses."""


@dataclass(frozen=True)
class PassConfig:
    """What one pass accumulates."""

    layer: int
    members: tuple[str, ...]
    """Checkpoints whose chunks the pass reads, in block order."""
    targets: tuple[str, ...]
    """Members whose own metrics are computed (the others are references only)."""
    base: dict[str, str | None]
    parent: dict[str, str | None]
    needs: frozenset[str]
    precision: str = "float32"
    xp: str = "numpy"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {list(PRECISIONS)}")

    def cross_pairs(self) -> list[tuple[str, str]]:
        """(target, reference) pairs whose cross-Gram is accumulated (parent == base: once)."""
        pairs: list[tuple[str, str]] = []
        for t in self.targets:
            refs = []
            if "cross_base" in self.needs and self.base.get(t) not in (None, t):
                refs.append(self.base[t])
            if "cross_parent" in self.needs and self.parent.get(t) is not None:
                refs.append(self.parent[t])
            pairs += [(t, r) for r in dict.fromkeys(refs)]
        return pairs


@dataclass
class MemberState:
    n: np.ndarray
    """Per cell: kept rows."""
    s: Any
    """Per cell: sum of the reference-shifted rows (float64, C x d)."""
    sq: Any
    """Per cell: sum of squared norms of the shifted rows (traces of cell scatters)."""
    Gd: Any
    """Per example group and domain: Gram of the shifted rows (float64, groups x domains x d x d;
    one group without uncertainty)."""
    Gs: Any
    """Per example group and span: Gram of the shifted rows (float64, groups x spans x d x d)."""
    ref: Any
    ref_set: np.ndarray
    unit: Any = None
    cross: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    """Reference checkpoint -> (per-domain, per-span) cross-Gram of shifted rows."""
    deb: dict[str, PairSums] = field(default_factory=dict)
    """Debiased CKA's per-cell sums with a reference checkpoint, and with itself (own name)."""
    rows: np.ndarray | None = None
    seq_sum: np.ndarray | None = None
    seq_cnt: np.ndarray | None = None
    seq_skip: np.ndarray | None = None
    """Per (domain, span or all): examples left out of seq_erank (identical tokens)."""
    pending: dict[int, list[tuple[Any, np.ndarray]]] = field(default_factory=dict)
    cunit: Any = None


@dataclass
class Accumulator:
    config: PassConfig
    plan: TokenPlan
    d: int
    states: dict[str, MemberState]
    mu_cell: dict[str, Any] = field(default_factory=dict)
    delta: dict[str, tuple[Any, Any, np.ndarray]] = field(default_factory=dict)
    chunks_seen: list[int] = field(default_factory=list)

    @property
    def dtype(self) -> type:
        return PRECISIONS[self.config.precision]


def init(config: PassConfig, plan: TokenPlan, d: int) -> Accumulator:
    xp = by_name(config.xp)
    C, nd, ns, G = plan.n_cells, len(plan.domains), len(plan.spans), plan.n_groups
    wd = PRECISIONS[config.precision]
    pairs = config.cross_pairs()
    states = {}
    for m in config.members:
        is_t = m in config.targets
        st = MemberState(
            n=np.zeros(C, np.int64),
            s=xp.zeros((C, d)),
            sq=xp.zeros(C),
            Gd=xp.zeros((G, nd, d, d)),
            Gs=xp.zeros((G, ns, d, d)),
            ref=xp.zeros((nd, d), dtype=wd),
            ref_set=np.zeros(nd, bool),
        )
        if is_t and "unit" in config.needs:
            st.unit = xp.zeros((C, d))
        if is_t and "rows" in config.needs:
            st.rows = np.zeros((len(plan.sample_tokens), d), np.float32)
        if is_t and "seq" in config.needs:
            # rows: group x n_domains + domain (tokens.SeqBatch), summed over groups in results
            st.seq_sum = np.zeros((G * nd, ns + 1))
            st.seq_cnt = np.zeros((G * nd, ns + 1), np.int64)
            st.seq_skip = np.zeros((G * nd, ns + 1), np.int64)
        for t, r in pairs:
            if t == m:
                st.cross[r] = (xp.zeros((G, nd, d, d)), xp.zeros((G, ns, d, d)))
        if "debias" in config.needs:
            st.deb[m] = PairSums.zeros(xp, C, d)
            st.deb.update({r: PairSums.zeros(xp, C, d) for t, r in pairs if t == m})
        states[m] = st
    return Accumulator(config=config, plan=plan, d=d, states=states)


def gather(xp: Any, block: Any, order: np.ndarray, d: int, wd: type) -> Any:
    x = xp.asarray(block).reshape(-1, d)
    return x[xp.asarray(order)].astype(wd)


def _rows(xp: Any, buf: Any, runs: tuple[tuple[int, int], ...]) -> Any:
    """The rows of ``runs`` of ``buf``: a view for one run, else one gathered copy."""
    if len(runs) == 1:
        return buf[runs[0][0] : runs[0][1]]
    return xp.concatenate([buf[a:b] for a, b in runs])


GEMM_OVERHEAD_ROWS = 140
"""What one more product call costs, in rows of a single product: on this 2-core machine a
576-wide float32 X^T X takes ~0.33 ms + 2.3 us per row (1 BLAS thread: 57 GFLOP/s at 32 rows,
239 at 555, 281 at 4,096)."""


def per_cell_products(cp: Any) -> bool:
    """Whether a chunk's Grams are formed per (domain, span) cell, each added to its domain's and
    its span's accumulator (every row enters one product), rather than per domain and again per
    span (every row enters two, and a span's rows are gathered from one run per domain). Cells
    win unless they are so many and so small that the per-call cost outweighs a second pass over
    the rows: (cells - domains - spans) x overhead < rows."""
    extra_calls = len(cp.segments) - len(cp.domain_runs) - len(cp.span_runs)
    return extra_calls * GEMM_OVERHEAD_ROWS < len(cp.order)


def _grams(xp: Any, Gd: Any, Gs: Any, x: Any, y: Any, cp: Any, plan: TokenPlan) -> None:
    """Add the chunk's per-(group,) domain and span products ``x^T y`` of shifted rows to ``Gd``,
    ``Gs`` (``y is x``: the Gram; else a cross-Gram on the same rows). With example groups every
    product is per cell (a cell belongs to one group)."""
    if plan.n_groups > 1 or per_cell_products(cp):
        group = plan.group_of_cells()
        for ci, a, b in cp.segments:
            di, si = plan.cells[ci]
            g = x[a:b].T @ y[a:b]
            Gd[group[ci], di] += g
            Gs[group[ci], si] += g
        return
    for di, a, b in cp.domain_runs:
        Gd[0, di] += x[a:b].T @ y[a:b]
    for si, runs in cp.span_runs:
        xs = _rows(xp, x, runs)
        Gs[0, si] += xs.T @ (xs if y is x else _rows(xp, y, runs))


def step1(acc: Accumulator, k: int, *blocks: Any) -> Accumulator:
    """Fold chunk ``k`` of every member (blocks in ``config.members`` order) into ``acc``."""
    cfg, plan, d, wd = acc.config, acc.plan, acc.d, acc.dtype
    xp = by_name(cfg.xp)
    cp = plan.chunks[k]
    bufs, bufs64, sqs = {}, {}, {}
    for m, block in zip(cfg.members, blocks, strict=True):
        st = acc.states[m]
        is_t = m in cfg.targets
        if st.rows is not None and len(cp.sample_rel):
            raw = xp.asarray(block).reshape(-1, d)[xp.asarray(cp.sample_rel)]
            st.rows[cp.sample_slot] = to_numpy(raw).astype(np.float32)
        # float64 rows for the member's own moments in both modes (module doc: RankMe)
        x64 = gather(xp, block, cp.order, d, np.float64)
        w = None
        if is_t and st.unit is not None:
            norms = xp.sqrt(xp.einsum("ij,ij->i", x64, x64))
            w = xp.where(norms > 0, 1.0 / xp.where(norms > 0, norms, 1.0), 0.0)
        for di, a, b in cp.domain_runs:
            if not st.ref_set[di]:
                st.ref[di] = x64[a:b].mean(axis=0).astype(wd)
                st.ref_set[di] = True
            x64[a:b] -= st.ref[di]
        _grams(xp, st.Gd, st.Gs, x64, x64, cp, plan)
        sq = xp.einsum("ij,ij->i", x64, x64)
        for ci, a, b in cp.segments:
            seg = x64[a:b]
            st.n[ci] += b - a
            st.s[ci] += seg.sum(axis=0)
            st.sq[ci] += sq[a:b].sum()
            if w is not None:
                ws = w[a:b]
                di = plan.cells[ci][0]
                st.unit[ci] += seg.T @ ws + st.ref[di].astype(np.float64) * float(ws.sum())
        buf = x64 if wd is np.float64 else x64.astype(wd)
        if is_t and st.seq_sum is not None:
            fold_sequences(st, cp, buf, xp)
        bufs[m], bufs64[m], sqs[m] = buf, x64, sq
    for t, r in cfg.cross_pairs():
        kd, ks = acc.states[t].cross[r]
        _grams(xp, kd, ks, bufs[t], bufs[r], cp, plan)
    for m, st in acc.states.items():  # debiased CKA: with itself and with its references
        for other, sums in st.deb.items():
            x, y, rx, ry = bufs64[m], bufs64[other], st.ref, acc.states[other].ref
            debias.fold(sums, x, y, sqs[m], sqs[other], rx, ry, cp.segments, plan)
    acc.chunks_seen.append(k)
    return acc


def cell_means(acc: Accumulator, m: str) -> np.ndarray:
    """Per (domain, span) cell of member ``m``, the exact mean of its kept rows (float64)."""
    st, plan = acc.states[m], acc.plan
    ref = to_numpy(st.ref).astype(np.float64)[[di for di, _ in plan.cells]]
    return ref + to_numpy(st.s) / np.maximum(st.n, 1)[:, None]


def _total(grouped: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(sum over example groups, the per-group array or None with one group)."""
    g = to_numpy(grouped)
    return (g[0], None) if len(g) == 1 else (g.sum(axis=0), g)


def _own(acc: Accumulator, m: str) -> CellMoments:
    st = acc.states[m]
    (Gd, Ggd), (Gs, Ggs) = _total(st.Gd), _total(st.Gs)
    return CellMoments(
        n=st.n.copy(),
        mu=cell_means(acc, m),
        s=to_numpy(st.s),
        sq=to_numpy(st.sq),
        Gd=Gd,
        Gs=Gs,
        Ggd=Ggd,
        Ggs=Ggs,
        unit=None if st.unit is None else to_numpy(st.unit),
        ref=np.asarray(to_numpy(st.ref), np.float64),
        deb_self=st.deb[m].to_host() if m in st.deb else None,
    )


def results(acc: Accumulator) -> dict[str, LayerMoments]:
    """Host moments per target."""
    cfg = acc.config
    own = {m: _own(acc, m) for m in cfg.members}
    out = {}
    for t in cfg.targets:
        st = acc.states[t]
        lm = LayerMoments(checkpoint=t, layer=cfg.layer, plan=acc.plan, own=own[t])
        for role, ref in (("base", cfg.base.get(t)), ("parent", cfg.parent.get(t))):
            if ref is None or f"cross_{role}" not in cfg.needs:
                continue
            if ref == t:  # the base against itself: the cross-Gram is its own Gram
                lm.refs[role] = (own[t], (own[t].Gd, own[t].Gs))
                kgd, kgs = own[t].Ggd, own[t].Ggs
            else:
                (kd, kgd), (ks, kgs) = (_total(a) for a in st.cross[ref])
                lm.refs[role] = (own[ref], (kd, ks))
            if kgd is not None and kgs is not None:
                lm.ref_groups[role] = (kgd, kgs)
            if ref in st.deb:
                lm.ref_deb[role] = own[t].deb_self if ref == t else st.deb[ref].to_host()
        lm.cunit = None if st.cunit is None else to_numpy(st.cunit)
        lm.rows = st.rows
        if st.seq_sum is not None:
            G, nd = acc.plan.n_groups, len(acc.plan.domains)
            per = [np.reshape(a, (G, nd, -1)) for a in (st.seq_sum, st.seq_cnt, st.seq_skip)]
            lm.seq_sum, lm.seq_cnt, lm.seq_skip = (a.sum(axis=0) for a in per)
            lm.seq_groups = (per[0], per[1], per[2]) if G > 1 else None
        out[t] = lm
    return out


__all__ = [
    "ALL",
    "Accumulator",
    "CellMoments",
    "LayerMoments",
    "PassConfig",
    "cell_means",
    "cross_scatter",
    "erank_of",
    "gather",
    "group_gram",
    "selection_scatter",
    "init",
    "results",
    "step1",
]
