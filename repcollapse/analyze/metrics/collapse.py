"""The collapse index: a standardised summary, always written beside its parts.

Within a model family (one store), for each layer, z-score across checkpoints each component
(whole probe: domain = span = 'all'), with the sign that makes larger mean more collapsed:

    -erank, -pr, +aniso_centered, +topk_var_10 (per layer), +lora_overlap_prev (layer-free)

and average the components a checkpoint has (missing ones - e.g. LoRA overlap for the base and
for first stages, which have no earlier update - are left out of its average, not set to 0).
z = (x - mean) / std with the population std over the checkpoints that have the component;
a component with fewer than 2 values or no spread contributes z = 0 (no spread: a std below
1e-9 of the values' magnitude, i.e. round-off between identical inputs, e.g. the embedding layer
of LoRA checkpoints, not a difference). Rows: ``collapse_index``
per layer and at layer -1, and its parts ``ci_z_<component>`` per layer. Layer -1 is the mean of
the per-layer index over ``repcollapse.analyze.layers.summary_layers`` (layers 1..L: layer 0,
the embeddings, which LoRA never changes, has its own row but stays out of the mean), the one
layer convention the stats and the stage table use too, so the two never summarise different
layers. Version 3 (version 2 wrote no layer -1 row when only layer 0 was analysed, where the
stats' mean took layer 0; version 1 averaged layer 0 in). The index depends on which checkpoints are analysed together,
so it is recomputed (cheaply, from the cached components) on every run, never cached.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from repcollapse.analyze.layers import summary_layers
from repcollapse.analyze.registry import Metric, register

COMPONENTS: tuple[tuple[str, float], ...] = (
    ("erank", -1.0),
    ("pr", -1.0),
    ("aniso_centered", 1.0),
    ("topk_var_10", 1.0),
    ("lora_overlap_prev", 1.0),
)
LAYER_FREE = {"lora_overlap_prev"}
SPREAD_FLOOR = 1e-9
"""Relative std below which a component has no spread across checkpoints (z = 0)."""


def zscore(values: pd.Series) -> pd.Series:
    v = values.astype(np.float64)
    ok = np.isfinite(v)
    out = pd.Series(np.nan, index=v.index)
    if ok.sum() == 0:
        return out
    sd = float(v[ok].std(ddof=0))
    flat = sd <= SPREAD_FLOOR * float(v[ok].abs().max())
    out[ok] = 0.0 if ok.sum() < 2 or flat else (v[ok] - v[ok].mean()) / sd
    return out


def part_name(component: str) -> str:
    return f"ci_z_{component}"


def collapse_part(part: str):  # noqa: ANN201
    """The compute function of the derived entry ``part`` (the index or one of its parts): the
    rows of that output of ``collapse_rows`` (checkpoint, layer, value, n_tokens)."""

    def compute(metrics: pd.DataFrame) -> pd.DataFrame:
        out = collapse_rows(metrics)
        return out[out["metric"] == part].drop(columns="metric")

    compute.__qualname__ = f"collapse_part.{part}"
    return compute


def collapse_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rows (checkpoint, layer, metric, value, n_tokens) of the index and its parts.

    ``metrics``: long-form rows of one store (columns metric, checkpoint, layer, domain, span,
    value, n_tokens).
    """
    whole = metrics[(metrics["domain"] == "all") & (metrics["span"] == "all")]
    names = [c for c, _ in COMPONENTS]
    whole = whole[whole["metric"].isin(names)]
    if whole.empty:
        return pd.DataFrame(columns=["checkpoint", "layer", "metric", "value", "n_tokens"])
    wide = whole.pivot_table(
        index=["checkpoint", "layer"], columns="metric", values="value", aggfunc="mean"
    )
    n_tok = whole.groupby(["checkpoint", "layer"])["n_tokens"].max()
    checkpoints = sorted(set(whole["checkpoint"]))
    free = wide.xs(-1, level="layer") if -1 in wide.index.get_level_values("layer") else None
    layers = sorted({int(x) for x in wide.index.get_level_values("layer")} - {-1})
    mean_layers = set(summary_layers(layers))
    lora_z = None
    if free is not None and "lora_overlap_prev" in free:
        lora_z = zscore(free["lora_overlap_prev"].reindex(checkpoints))
    rows = []
    per_layer: dict[str, list[float]] = {c: [] for c in checkpoints}
    for layer in layers or [-1]:
        parts = {}
        if layer != -1:
            at = wide.xs(layer, level="layer").reindex(checkpoints)
            for comp, sign in COMPONENTS:
                if comp not in LAYER_FREE and comp in at:
                    parts[comp] = zscore(sign * at[comp])
        if lora_z is not None:
            parts["lora_overlap_prev"] = lora_z
        if not parts:
            continue
        frame = pd.DataFrame(parts, index=checkpoints)
        index = frame.mean(axis=1, skipna=True)
        for c in checkpoints:
            if not np.isfinite(index[c]):
                continue
            n = int(n_tok.get((c, layer), n_tok.xs(c, level="checkpoint").max()))
            if layer in mean_layers:
                per_layer[c].append(float(index[c]))
            if layer != -1:
                rows.append((c, layer, "collapse_index", float(index[c]), n))
            for comp in frame.columns:
                if np.isfinite(frame.loc[c, comp]):
                    rows.append((c, layer, part_name(comp), float(frame.loc[c, comp]), n))
            if layer == -1:
                per_layer[c].append(float(index[c]))
    for c, values in per_layer.items():
        if values:
            n = int(n_tok.xs(c, level="checkpoint").max())
            rows.append((c, -1, "collapse_index", float(np.mean(values)), n))
    return pd.DataFrame(rows, columns=["checkpoint", "layer", "metric", "value", "n_tokens"])


_REQ = tuple(c for c, _ in COMPONENTS)
register(
    Metric(
        "collapse_index",
        3,
        "mean of the within-family z-scores of -erank, -pr, +aniso_centered, +topk_var_10, "
        "+lora_overlap_prev (components a checkpoint lacks are left out)",
        "derived",
        ("metrics",),
        collapse_part("collapse_index"),
        scopes=("all",),
        requires=_REQ,
    )
)
for _comp, _sign in COMPONENTS:
    register(
        Metric(
            part_name(_comp),
            1,
            f"collapse-index part: within-family z-score of {'+' if _sign > 0 else '-'}{_comp}",
            "derived",
            ("metrics",),
            collapse_part(part_name(_comp)),
            scopes=("all",),
            requires=_REQ,
        )
    )
