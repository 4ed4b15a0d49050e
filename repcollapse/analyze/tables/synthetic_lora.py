"""The LoRA tables of the synthetic metric tables (lora_overlap.parquet, lora_spectrum.parquet),
built from the checkpoint rows ``synthetic.make_synthetic_tables`` draws (their latent collapse
level ``_c``)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def lora_overlap_table(
    ck: pd.DataFrame, rank: int, seed: int, rng: np.random.Generator
) -> pd.DataFrame:
    """Overlaps between the stages of one seed of each family: a child's overlap with its parent
    is its ``lora_overlap_prev``, other pairs more alike within one sequence and mitigation."""
    stages = ck[(ck["stage_index"] > 0) & (ck["seed"] == seed)]
    rows = []
    for (sid, fam), g in stages.groupby(["store_id", "model_family"]):
        recs = g.to_dict("records")
        for i, a in enumerate(recs):
            for b in recs[i + 1 :]:
                if b["parent"] == a["checkpoint"] and pd.notna(b["lora_overlap_prev"]):
                    val = b["lora_overlap_prev"]
                else:
                    same = a["sequence"] == b["sequence"] and a["mitigation"] == b["mitigation"]
                    val = 0.05 + 0.1 * same + 0.03 * min(a["_c"], b["_c"]) + rng.normal(0, 0.01)
                for j, mod in enumerate(("q_proj", "v_proj")):  # module jitter averages out
                    rows.append(
                        dict(
                            store_id=sid,
                            model_family=fam,
                            checkpoint_a=a["checkpoint"],
                            checkpoint_b=b["checkpoint"],
                            module=mod,
                            k=rank,
                            overlap=float(val + (0.01 if j else -0.01)),
                            baseline=rank / 576,
                        )
                    )
    return pd.DataFrame(rows)


def lora_spectrum_table(ck: pd.DataFrame, rank: int, n_layers: int) -> pd.DataFrame:
    """Singular values decaying faster the more collapsed the checkpoint (every module, block)."""
    st = ck[ck["stage_index"] > 0]
    mods, k, nb = ("q_proj", "v_proj"), rank, n_layers
    per = len(mods) * nb * k  # rows per checkpoint
    idx = np.tile(np.arange(k), len(st) * len(mods) * nb)
    rate = np.repeat(0.3 + 0.1 * st["_c"].to_numpy(), per)
    return pd.DataFrame(
        {
            "store_id": np.repeat(st["store_id"].to_numpy(), per),
            "model_family": np.repeat(st["model_family"].to_numpy(), per),
            "checkpoint": np.repeat(st["checkpoint"].to_numpy(), per),
            "module": np.tile(np.repeat(mods, nb * k), len(st)),
            "block": np.tile(np.repeat(np.arange(nb), k), len(st) * len(mods)),
            "index": idx,
            "singular_value": np.exp(-idx * rate),
        }
    )
