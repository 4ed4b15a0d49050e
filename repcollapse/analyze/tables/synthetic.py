"""Synthetic metric tables in the docs/INTERFACES.md format, with KNOWN coefficients.

For tests and for developing stats, figures and the report before real tables exist. Each
checkpoint gets a latent collapse level that accumulates over its chain (domain-specific step
sizes, damped by mitigations); every metric is a noisy linear function of it, and the
future-task score is a known linear function of the checkpoint-level predictors plus a random
intercept per model family, one per (family, sequence) and residual noise. So a regression on
the tables must recover ``SyntheticTruth.coefficients`` (raw units: score per metric unit).

Per-layer values are built so that the mean over layers 1..L equals the checkpoint-level value
exactly (the default ``LayerConvention``); layer 0 (embeddings) never changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from repcollapse.analyze.tables.synthetic_lora import lora_overlap_table, lora_spectrum_table
from repcollapse.analyze.tables.write import CHECKPOINT_COLUMNS
from repcollapse.store_schema.records import DOMAINS

SEQUENCES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("A", (("sft", "general"), ("sft", "math"), ("sft", "code"), ("sft", "safety"))),
    ("B", (("sft", "general"), ("sft", "long_cot"), ("dpo", "preference"))),
    ("C", (("sft", "safety"), ("sft", "general"), ("sft", "math"))),
    ("D", (("sft", "general"), ("sft", "code"), ("sft", "math"))),
    ("control", (("sft", "general"),) * 4),
)
# Collapse added by one stage of each domain, and the damping of each mitigation.
STEP: dict[str, float] = {
    "general": 0.3,
    "math": 0.8,
    "code": 0.6,
    "safety": 1.1,
    "long_cot": 0.9,
    "preference": 1.0,
}
MITIGATIONS: dict[str, float] = {
    "replay:general:0.10": 0.6,
    "replay:random:0.10": 0.8,
    "diversity:0.1": 0.45,
}
COEFFICIENTS: dict[str, float] = {
    "erank_norm": 0.8,
    "aniso_centered": -0.6,
    "drift_base": -0.3,
    "entropy": 0.03,
    "lora_overlap_prev": -0.2,
    "target_score": 0.1,
    "val_loss": -0.05,
    "tokens_seen": -1e-8,
}
"""Future-score change per unit of each predictor (raw units)."""
REFERENCE: dict[str, float] = {
    "erank_norm": 0.75,
    "aniso_centered": 0.05,
    "entropy": 2.5,
    "target_score": 0.45,
    "val_loss": 2.0,
}
SPAN_NAMES: tuple[str, ...] = ("prompt", "early_response", "late_response", "cot", "refusal")


@dataclass(frozen=True)
class SyntheticTablesSpec:
    families: tuple[str, ...] = ("smollm2", "gemma3", "qwen25", "llama32")
    seeds: tuple[int, ...] = (0, 1, 2)
    n_layers: int = 6
    """Transformer layers; metrics are written for layers 0..n_layers (0 = embeddings)."""
    mitigated_sequence: str = "A"
    mitigations: tuple[str, ...] = tuple(MITIGATIONS)
    noop: bool = True
    """Add a matched no-op adapter stage after base: sequence 'A' with mitigation 'noop', the
    shape ``train/configs/A_noop.toml`` trains."""
    noise_sd: float = 0.01
    family_sd: float = 0.03
    sequence_sd: float = 0.01
    lora_rank: int = 8
    seed: int = 0
    coefficients: dict[str, float] = field(default_factory=lambda: dict(COEFFICIENTS))


@dataclass(frozen=True)
class SyntheticTruth:
    tables_dir: Path
    coefficients: dict[str, float]
    n_checkpoints: int


def make_synthetic_tables(
    out_dir: str | Path, spec: SyntheticTablesSpec = SyntheticTablesSpec()
) -> SyntheticTruth:
    """Write metrics, checkpoints, lora_overlap, lora_spectrum parquet and provenance.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    ck = pd.concat([_family_checkpoints(f, spec, rng) for f in spec.families], ignore_index=True)
    ck = _add_predictors(ck, spec, rng)
    ck.drop(columns=[c for c in ck if c.startswith("_")]).pipe(_checkpoint_columns).assign(
        train_losses=_train_losses(ck, spec.seed)
    ).to_parquet(out / "checkpoints.parquet", index=False)
    _metrics_long(ck, spec, rng).to_parquet(out / "metrics.parquet", index=False)
    lora_overlap_table(ck, spec.lora_rank, spec.seeds[0], rng).to_parquet(
        out / "lora_overlap.parquet", index=False
    )
    lora_spectrum_table(ck, spec.lora_rank, spec.n_layers).to_parquet(
        out / "lora_spectrum.parquet", index=False
    )
    prov = [
        {
            "schema_version": 1,
            "store_kind": "activations",
            "store_id": f"synthetic-{f}",
            "probe_hash": "sha256:synthetic-probe",
            "model_id": f"synthetic/{f}",
            "model_family": f,
            "tokenizer": f"synthetic/{f}",
            "code_version": "synthetic-0",
            "extraction_config": {"synthetic": True},
            "created_at": "2025-01-01T00:00:00Z",
        }
        for f in spec.families
    ]
    (out / "provenance.json").write_text(json.dumps(prov if len(prov) > 1 else prov[0], indent=1))
    return SyntheticTruth(out, dict(spec.coefficients), len(ck))


def _family_checkpoints(
    fam: str, spec: SyntheticTablesSpec, rng: np.random.Generator
) -> pd.DataFrame:
    rows = [
        dict(
            checkpoint="base",
            sequence="",
            stage_index=0,
            stage_kind="base",
            stage_domain="",
            parent="",
            seed=spec.seeds[0],
            mitigation="none",
            _c=0.0,
        )
    ]
    fam_scale = rng.uniform(0.8, 1.2)
    chains = [(name, stages, "none") for name, stages in SEQUENCES]
    chains += [
        (spec.mitigated_sequence, dict(SEQUENCES)[spec.mitigated_sequence], m)
        for m in spec.mitigations
    ]
    for seed in spec.seeds:
        for seq, stages, mit in chains:
            parent, c = "base", 0.0
            for i, (kind, dom) in enumerate(stages, start=1):
                tag = seq if mit == "none" else f"{seq}[{mit}]"
                name = f"{tag}/s{seed}/{i:02d}-{dom}"
                c += STEP[dom] * fam_scale * MITIGATIONS.get(mit, 1.0) + rng.normal(0, 0.05)
                rows.append(
                    dict(
                        checkpoint=name,
                        sequence=seq,
                        stage_index=i,
                        stage_kind=kind,
                        stage_domain=dom,
                        parent=parent,
                        seed=seed,
                        mitigation=mit,
                        _c=c,
                    )
                )
                parent = name
        if spec.noop:
            rows.append(
                dict(
                    checkpoint=f"A[noop]/s{seed}/01-general",
                    sequence="A",
                    stage_index=1,
                    stage_kind="sft",
                    stage_domain="general",
                    parent="base",
                    seed=seed,
                    mitigation="noop",
                    _c=0.0,
                )
            )
    df = pd.DataFrame(rows)
    df["model_family"], df["store_id"] = fam, f"synthetic-{fam}"
    return df


def _add_predictors(
    ck: pd.DataFrame, spec: SyntheticTablesSpec, rng: np.random.Generator
) -> pd.DataFrame:
    n, c = len(ck), ck["_c"].to_numpy()
    noop = (ck["mitigation"] == "noop").to_numpy()
    base = (ck["stage_index"] == 0).to_numpy()
    quiet = noop | base
    # Base carries no stage noise; a no-op adapter only a trace of it (numerical jitter).
    scale = np.where(base, 0.0, np.where(noop, 0.02, 1.0))

    def noisy(sd: float) -> np.ndarray:
        return scale * rng.normal(0, sd, n)

    ck["erank_norm"] = 0.75 - 0.06 * c + noisy(0.02)
    ck["pr_norm"] = 0.40 - 0.05 * c + noisy(0.015)
    ck["aniso_centered"] = 0.05 + 0.03 * c + noisy(0.01)
    ck["aniso_uncentered"] = 0.30 + 0.04 * c + noisy(0.02)
    ck["topk_var_10"] = 0.30 + 0.05 * c + noisy(0.015)
    ck["topk_var_1"] = 0.08 + 0.03 * c + noisy(0.01)
    ck["drift_base"] = np.where(quiet, 0.0, 0.04 * c + np.abs(rng.normal(0, 0.02, n)))
    ck["entropy"] = 2.5 - 0.25 * c + noisy(0.1)
    prev = (ck["stage_index"] > 1).to_numpy()
    ck["lora_overlap_prev"] = np.where(prev, 0.15 + 0.05 * c + rng.normal(0, 0.03, n), np.nan)
    ck["target_score"] = np.clip(0.45 + 0.08 * ck["stage_index"] - 0.02 * c + noisy(0.03), 0.0, 1.0)
    ck["val_loss"] = 2.0 + 0.1 * c + noisy(0.05)
    ck["tokens_seen"] = (ck["stage_index"] * 1e6 * rng.uniform(0.8, 1.2, n)).round()
    ck.loc[noop, "tokens_seen"] = 1e6
    base_of = ck[base].set_index("store_id")
    for col in ("target_score", "val_loss"):  # a no-op stage leaves behaviour alone
        ck.loc[noop, col] = ck.loc[noop, "store_id"].map(base_of[col]).astype(float)
    fam_u = {f: rng.normal(0, spec.family_sd) for f in ck["model_family"].unique()}
    cells = ck["model_family"] + "/" + ck["sequence"]
    seq_v = {k: rng.normal(0, spec.sequence_sd) for k in cells.unique()}
    x = ck[list(spec.coefficients)].fillna({"lora_overlap_prev": 0.0})
    # Centred on typical base values so that scores stay in [0, 1]; the slopes are unchanged.
    ref = pd.Series(REFERENCE).reindex(x.columns).fillna(0.0)
    future = 0.7 + (x - ref).to_numpy() @ np.array(list(spec.coefficients.values()))
    future += ck["model_family"].map(fam_u).to_numpy() + cells.map(seq_v).to_numpy()
    ck["future_score"] = future + rng.normal(0, spec.noise_sd, n)
    ck["future_auc"] = ck["future_score"] * 0.9
    ck["retention"] = 0.8 - 0.03 * c
    ck["ece"] = 0.05 + 0.01 * c
    return ck


def _train_losses(ck: pd.DataFrame, seed: int, steps: int = 12) -> list[str]:
    """Each stage's training loss per step (JSON text, '' for a base), as checkpoints.parquet's
    ``train_losses`` column holds it: a noisy decay from 3 towards a domain's level. From its
    own generator, so the other synthetic values do not move."""
    rng = np.random.default_rng([seed, 1])
    out = []
    for k, dom in zip(ck["stage_index"], ck["stage_domain"], strict=True):
        if k == 0:
            out.append("")
            continue
        floor = 1.0 + STEP.get(str(dom), 0.5)
        curve = floor + (3.0 - floor) * np.exp(-np.arange(steps) / 4)
        out.append(json.dumps((curve + rng.normal(0, 0.03, steps)).round(4).tolist()))
    return out


def _checkpoint_columns(ck: pd.DataFrame) -> pd.DataFrame:
    ck = ck.assign(model_id="synthetic/" + ck["model_family"], lora_rank=8)
    ck.loc[ck["stage_index"] == 0, "lora_rank"] = 0
    cols = list(CHECKPOINT_COLUMNS)  # the contract of checkpoints.parquet, not a copy of it
    return ck[cols].astype({"tokens_seen": "int64", "lora_rank": "int64", "seed": "int64"})


def _metrics_long(
    ck: pd.DataFrame, spec: SyntheticTablesSpec, rng: np.random.Generator
) -> pd.DataFrame:
    L = spec.n_layers
    layers = np.arange(1, L + 1)
    # Changes concentrate in a band of middle layers; the weights average to 1 over 1..L so the
    # layer mean equals the checkpoint-level value.
    w = 1.0 + 0.8 * np.sin(np.pi * (layers - 0.5) / L - np.pi / 4)
    w = w / w.mean()
    profile = np.linspace(-0.05, 0.05, L)
    layered = [
        "erank_norm",
        "pr_norm",
        "aniso_centered",
        "aniso_uncentered",
        "topk_var_10",
        "topk_var_1",
        "drift_base",
    ]
    rows: list[pd.DataFrame] = []
    base_of = ck[ck["stage_index"] == 0].set_index("store_id")
    for name in layered:
        x = ck[name].to_numpy()
        xb = ck["store_id"].map(base_of[name]).to_numpy()
        prof = 0.0 if name == "drift_base" else profile
        vals = xb[:, None] + prof + (x - xb)[:, None] * w  # (ckpt, layer 1..L)
        emb = np.repeat((xb + (0.0 if name == "drift_base" else 0.1))[:, None], 1, axis=1)
        rows.append(_long(ck, name, np.hstack([emb, vals]), np.arange(0, L + 1)))
        if name in ("erank_norm", "pr_norm", "aniso_centered"):
            rows += _domain_rows(ck, name, vals, layers)
        if name in ("erank_norm", "pr_norm"):
            rows += _span_rows(ck, name, vals, layers)
    acc = 0.9 - 0.02 * ck["_c"].to_numpy()[:, None] + 0 * layers
    rows.append(_long(ck, "probe_acc", acc, layers))
    shuffled = 1 / len(DOMAINS) + rng.normal(0, 0.02, (len(ck), L))
    rows.append(_long(ck, "probe_acc_shuffled", shuffled, layers))
    free = ["entropy", "lora_overlap_prev"]
    for name in free:
        keep = ck[name].notna().to_numpy()
        rows.append(_long(ck[keep], name, ck.loc[keep, name].to_numpy()[:, None], [-1]))
    rows.append(_long(ck, "collapse_index", _collapse_index(ck)[:, None], [-1]))
    out = pd.concat(rows, ignore_index=True)
    out["metric_version"], out["sinks_excluded"], out["n_tokens"] = 1, True, 600
    return out


def _long(
    ck: pd.DataFrame, metric: str, vals: np.ndarray, layers, domain: str = "all", span: str = "all"
) -> pd.DataFrame:
    n, nl = vals.shape
    return pd.DataFrame(
        {
            "metric": metric,
            "store_id": np.repeat(ck["store_id"].to_numpy(), nl),
            "model_family": np.repeat(ck["model_family"].to_numpy(), nl),
            "checkpoint": np.repeat(ck["checkpoint"].to_numpy(), nl),
            "layer": np.tile(np.asarray(layers, dtype=np.int64), n),
            "domain": domain,
            "span": span,
            "value": vals.reshape(-1).astype(np.float64),
        }
    )


def _trained_count(ck: pd.DataFrame, what: str) -> np.ndarray:
    """How many stages of domain ``what`` each checkpoint's chain has been through."""
    keys = list(zip(ck["store_id"], ck["checkpoint"], strict=True))
    parents = list(zip(ck["store_id"], ck["parent"], strict=True))
    parent_of = dict(zip(keys, parents, strict=True))
    own_of = dict(zip(keys, (ck["stage_domain"] == what).astype(float), strict=True))
    out = []
    for key in keys:
        total = 0.0
        while key in own_of:
            total += own_of[key]
            key = parent_of[key]
        out.append(total)
    return np.array(out)


def _domain_rows(ck: pd.DataFrame, name: str, vals: np.ndarray, layers) -> list[pd.DataFrame]:
    sign = 1.0 if name == "aniso_centered" else -1.0
    return [
        _long(
            ck,
            name,
            vals + 0.02 * i - 0.05 + sign * 0.03 * _trained_count(ck, d)[:, None],
            layers,
            domain=d,
        )
        for i, d in enumerate(DOMAINS)
    ]


def _span_rows(ck: pd.DataFrame, name: str, vals: np.ndarray, layers) -> list[pd.DataFrame]:
    late = (_trained_count(ck, "safety") + _trained_count(ck, "long_cot"))[:, None]
    offsets = {
        "prompt": 0.03,
        "early_response": 0.0,
        "late_response": -0.02,
        "cot": -0.04,
        "refusal": -0.06,
    }
    return [
        _long(ck, name, vals + offsets[s] - (0.04 * late if s != "prompt" else 0.0), layers, span=s)
        for s in SPAN_NAMES
    ]


def _collapse_index(ck: pd.DataFrame) -> np.ndarray:
    """As docs/metrics.md defines it: mean of within-family z-scores of the collapse directions."""
    parts = {
        "erank_norm": -1,
        "pr_norm": -1,
        "aniso_centered": 1,
        "topk_var_10": 1,
        "lora_overlap_prev": 1,
    }
    zs = []
    for col, sign in parts.items():
        g = ck.groupby("model_family")[col]
        zs.append(sign * (ck[col] - g.transform("mean")) / g.transform("std"))
    return pd.concat(zs, axis=1).mean(axis=1, skipna=True).to_numpy()
