"""Synthetic tables whose every paper claim has a KNOWN effect, for testing the claim verdicts.

Each checkpoint has a latent collapse level c = 0.5 k + (specialisation stages so far) + an
order term (math before code adds ``ORDER_EXTRA`` from the stage after both), k the stage
index; a general-replay chain has c damped by half. Every metric is linear in
``strength`` x c plus independent noise of ``noise_sd`` per checkpoint, so ``strength`` = 1
gives each claim an effect of at least twice its smallest effect of interest (docs/claims.md),
and ``strength`` = 0 gives none (the replay claim then has a small negative effect: replay
costs some target score). The collapse index is computed the way docs/metrics.md defines it
(within-family z-scores) from the components written here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from repcollapse.analyze.tables.write import CHECKPOINT_COLUMNS

CHAINS: dict[str, tuple[str, ...]] = {
    "A": ("general", "math", "code", "safety"),
    "D": ("general", "code", "math"),
    "control": ("general", "general", "general", "general"),
}
REPLAY = "replay:general:0.10"
ORDER_EXTRA = 2.0
FUTURE_SLOPE = 0.03
"""Future-score loss per unit of latent collapse (times strength)."""


@dataclass(frozen=True)
class ClaimTablesSpec:
    families: tuple[str, ...] = ("fam_a", "fam_b")
    seeds: tuple[int, ...] = (0, 1, 2)
    strength: float = 1.0
    noise_sd: float = 0.005
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.families or not self.seeds:
            raise ValueError(
                f"ClaimTablesSpec: expected at least one family and one seed, found "
                f"families={self.families!r}, seeds={self.seeds!r}"
            )
        if self.noise_sd < 0:
            raise ValueError(f"ClaimTablesSpec.noise_sd: expected >= 0, found {self.noise_sd!r}")


def _latent(stages: tuple[str, ...], k: int, replay: bool) -> float:
    done = stages[:k]
    c = 0.5 * k + sum(s != "general" for s in done)
    if "math" in done and "code" in done and done.index("math") < done.index("code"):
        c += ORDER_EXTRA
    return c * (0.5 if replay else 1.0)


def _rows(spec: ClaimTablesSpec) -> pd.DataFrame:
    rows = []
    for fam in spec.families:
        rows.append(
            dict(
                model_family=fam,
                checkpoint="base",
                sequence="",
                stage_index=0,
                stage_domain="",
                parent="",
                seed=spec.seeds[0],
                mitigation="none",
                c=0.0,
            )
        )
        chains = [(seq, st, "none") for seq, st in CHAINS.items()] + [("A", CHAINS["A"], REPLAY)]
        for seed in spec.seeds:
            for seq, stages, mit in chains:
                parent = "base"
                for k in range(1, len(stages) + 1):
                    tag = seq if mit == "none" else f"{seq}[{mit}]"
                    name = f"{tag}/s{seed}/{k:02d}-{stages[k - 1]}"
                    rows.append(
                        dict(
                            model_family=fam,
                            checkpoint=name,
                            sequence=seq,
                            stage_index=k,
                            stage_domain=stages[k - 1],
                            parent=parent,
                            seed=seed,
                            mitigation=mit,
                            c=_latent(stages, k, mit != "none"),
                        )
                    )
                    parent = name
    return pd.DataFrame(rows)


def make_claim_tables(out_dir: str | Path, spec: ClaimTablesSpec = ClaimTablesSpec()) -> Path:
    """Write checkpoints.parquet, metrics.parquet and provenance.json; return the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    ck = _rows(spec)
    n, s, c, k = len(ck), spec.strength, ck["c"].to_numpy(), ck["stage_index"].to_numpy()
    base = k == 0

    def noise() -> np.ndarray:
        return np.where(base, 0.0, rng.normal(0.0, spec.noise_sd, n))

    vals = {
        "erank_norm": 0.74 - 0.005 * k - s * 0.01 * c + noise(),
        "aniso_centered": 0.08 + s * 0.02 * c + noise(),
        "drift_base": s * 0.05 * c + noise(),
        "entropy": 4.34 - s * 0.1 * c + noise(),
        "lora_overlap_prev": np.where(k >= 2, 0.2 + s * 0.06 * c + noise(), np.nan),
    }
    ck["future_score"] = 0.71 - s * FUTURE_SLOPE * c + noise()
    ck["target_score"] = 0.5 + 0.04 * k - 0.01 * (ck["mitigation"] != "none") + noise()
    ck["val_loss"] = 2.0 - 0.05 * k + noise()
    ck["tokens_seen"] = (k * 1_000_000).astype("int64")
    ck["retention"] = ck["ece"] = ck["future_auc"] = np.nan
    ck["store_id"], ck["model_id"] = "syn-" + ck["model_family"], "synthetic/" + ck["model_family"]
    ck["stage_kind"] = np.where(base, "base", "sft")
    ck["lora_rank"] = np.where(base, 0, 8).astype("int64")
    ck[list(CHECKPOINT_COLUMNS)].to_parquet(out / "checkpoints.parquet", index=False)
    # The collapse index: mean of within-family z-scores of the collapse directions present.
    z = []
    for col, sign in (("erank_norm", -1), ("aniso_centered", 1), ("lora_overlap_prev", 1)):
        v = pd.Series(vals[col])
        g = v.groupby(ck["model_family"])
        z.append(sign * (v - g.transform("mean")) / g.transform("std"))
    vals["collapse_index"] = pd.concat(z, axis=1).mean(axis=1, skipna=True).to_numpy()
    long = [
        pd.DataFrame(
            {
                "metric": name,
                "metric_version": 1,
                "store_id": ck["store_id"],
                "model_family": ck["model_family"],
                "checkpoint": ck["checkpoint"],
                "layer": -1,
                "domain": "all",
                "span": "all",
                "value": v,
                "sinks_excluded": True,
                "n_tokens": 600,
            }
        ).dropna(subset=["value"])
        for name, v in vals.items()
    ]
    pd.concat(long, ignore_index=True).to_parquet(out / "metrics.parquet", index=False)
    prov = [{"store_id": f"syn-{f}", "model_family": f} for f in spec.families]
    (out / "provenance.json").write_text(json.dumps(prov))
    return out
