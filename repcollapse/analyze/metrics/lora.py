"""Update metrics from the stored LoRA factors (docs/metrics.md), never the dense matrix.

Delta W = scaling * B A with B (out x r), A (r x in). With B = Q_b R_b and A^T = Q_a R_a,
Delta W = Q_b (scaling R_b R_a^T) Q_a^T, so the SVD of the r x r core gives the singular values
and U = Q_b U_core: O((out + in) r^2), the out x in matrix is never formed.

- ``lora_spectrum.parquet``: the singular values of every (checkpoint, module, block).
- ``lora_update_erank``: effective rank of the update (Roy & Vetterli: exp of the entropy of
  s_i / sum s), mean over modules per block, reported at layer = block + 1 (the hidden layer the
  block writes), and at layer -1 as the mean over blocks and modules.
- ``lora_overlap.parquet``: for every ordered pair of checkpoints with an update (the diagonal
  included), per module, the mean over blocks of ||U_a^T U_b||_F^2 / k, U the top-k left singular
  vectors, k = min(Options.lora_k, r_a, r_b) (mean squared cosine of the principal angles),
  beside the random baseline k / out.
- ``lora_overlap_prev``: mean over the checkpoint's ancestors with an update (earlier stages
  along its parent chain) of the module-mean overlap; absent for the base and for a first stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from repcollapse.analyze.engine.moments import erank_of
from repcollapse.analyze.registry import Metric, register
from repcollapse.store_schema import schema as S


@dataclass(frozen=True)
class BlockUpdate:
    U: np.ndarray
    """(out, r) left singular vectors, by decreasing singular value."""
    sigma: np.ndarray


def update_svd(A: np.ndarray, B: np.ndarray, scaling: float) -> BlockUpdate:
    """SVD of scaling * B @ A via QR of B and A^T and an r x r SVD."""
    qb, rb = np.linalg.qr(np.asarray(B, np.float64))
    qa, ra = np.linalg.qr(np.asarray(A, np.float64).T)
    uc, s, _ = np.linalg.svd(scaling * (rb @ ra.T))
    return BlockUpdate(U=qb @ uc, sigma=s)


def subspace_overlap(Ua: np.ndarray, Ub: np.ndarray, k: int) -> float:
    """||Ua[:, :k]^T Ub[:, :k]||_F^2 / k (1 for the same subspace, 0 for orthogonal ones)."""
    m = Ua[:, :k].T @ Ub[:, :k]
    return float(np.sum(m * m) / k)


def checkpoint_updates(ds: xr.Dataset, checkpoint: str) -> dict[str, list[BlockUpdate]]:
    """Per module, per block: the SVD of the checkpoint's stored update ({} if it has none)."""
    rank = int(ds["lora_rank"].sel(checkpoint=checkpoint).values)
    if rank <= 0:
        return {}
    scaling = float(ds["lora_scaling"].sel(checkpoint=checkpoint).values)
    out: dict[str, list[BlockUpdate]] = {}
    for module in lora_modules(ds):
        A = np.asarray(ds[S.lora_a_name(module)].sel(checkpoint=checkpoint).values)[:, :rank]
        B = np.asarray(ds[S.lora_b_name(module)].sel(checkpoint=checkpoint).values)[:, :, :rank]
        ups = [update_svd(A[b], B[b], scaling) for b in range(A.shape[0])]
        if all(float(u.sigma[0]) > 0 for u in ups):  # an all-zero (no-op) update has no subspace
            out[module] = ups
    return out


def lora_modules(ds: xr.Dataset) -> list[str]:
    prefix = "lora_A__"
    return sorted(str(v)[len(prefix) :] for v in ds.data_vars if str(v).startswith(prefix))


@dataclass(frozen=True)
class LoraInputs:
    """What a lora metric's ``compute`` receives for one checkpoint."""

    checkpoint: str
    updates: dict[str, dict[str, list[BlockUpdate]]]
    """Every checkpoint's update: checkpoint -> module -> per-block ``BlockUpdate`` (empty for a
    checkpoint without LoRA factors, e.g. the base)."""
    ancestors: tuple[str, ...]
    """The checkpoint's earlier stages along its parent chain."""
    k: int
    """``Options.lora_k``: the top-k of the subspace overlaps."""

    @property
    def own(self) -> dict[str, list[BlockUpdate]]:
        """This checkpoint's update (module -> per-block), empty when it has none."""
        return self.updates.get(self.checkpoint) or {}


def update_erank_rows(updates: dict[str, list[BlockUpdate]]) -> list[tuple[int, float]]:
    """(layer, value): module-mean effective rank per block (layer = block + 1), then layer -1."""
    if not updates:
        return []
    per = np.array([[float(erank_of(u.sigma)) for u in ups] for ups in updates.values()])
    rows = [(b + 1, float(per[:, b].mean())) for b in range(per.shape[1])]
    return rows + [(-1, float(per.mean()))]


def pair_overlap(
    a: dict[str, list[BlockUpdate]], b: dict[str, list[BlockUpdate]], k_max: int
) -> dict[str, tuple[int, float, float]]:
    """module -> (k, mean over blocks of the overlap, random baseline k / out)."""
    out = {}
    for module in sorted(set(a) & set(b)):
        ua, ub = a[module], b[module]
        k = min(k_max, ua[0].U.shape[1], ub[0].U.shape[1])
        value = float(np.mean([subspace_overlap(x.U, y.U, k) for x, y in zip(ua, ub, strict=True)]))
        out[module] = (k, value, k / ua[0].U.shape[0])
    return out


def overlap_prev(
    checkpoint: str,
    ancestors: list[str],
    updates: dict[str, dict[str, list[BlockUpdate]]],
    k_max: int,
) -> float | None:
    """Mean over ancestors with an update of the module-mean overlap with ``checkpoint``."""
    mine = updates.get(checkpoint) or {}
    values = []
    for anc in ancestors:
        pair = pair_overlap(mine, updates.get(anc) or {}, k_max)
        if pair:
            values.append(np.mean([v for _, v, _ in pair.values()]))
    return float(np.mean(values)) if values else None


def update_erank(inputs: LoraInputs) -> dict[int, float]:
    return dict(update_erank_rows(inputs.own))


def overlap_prev_of(inputs: LoraInputs) -> float | None:
    return overlap_prev(inputs.checkpoint, list(inputs.ancestors), inputs.updates, inputs.k)


register(
    Metric(
        "lora_update_erank",
        1,
        "effective rank of the stage's LoRA update (singular values via QR + r x r SVD)",
        "lora",
        ("lora",),
        update_erank,
        scopes=("all",),
    )
)
register(
    Metric(
        "lora_overlap_prev",
        1,
        "mean top-k left-singular-subspace overlap with the earlier stages' updates",
        "lora",
        ("lora",),
        overlap_prev_of,
        scopes=("all",),
        params=("lora_k",),
    )
)
