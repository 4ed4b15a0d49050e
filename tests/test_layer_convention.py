"""One layer convention: the collapse index's layer -1 row and the stats' / stage table's layer
mean average the same layers (1..L; layer 0, the embeddings, left out), from one function."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from repcollapse.analyze.layers import summary_layers
from repcollapse.analyze.metrics.collapse import COMPONENTS, collapse_rows
from repcollapse.analyze.tables.read import LayerConvention, select_metrics

KEY = ["metric", "checkpoint", "layer", "domain", "span"]
CKPTS = ("base", "A/01", "A/02")


def _metrics(layers: list[int], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for c in CKPTS:
        for layer in layers:
            for comp, _ in COMPONENTS:
                if comp == "lora_overlap_prev":
                    continue
                # the embeddings get their own large spread: a mean that took them in moves
                v = rng.normal() * (50.0 if layer == 0 else 1.0)
                rows.append((comp, c, layer, "all", "all", v, 100))
    return pd.DataFrame(rows, columns=[*KEY, "value", "n_tokens"])


def test_summary_layers() -> None:
    assert summary_layers([0, 1, 2, 3]) == [1, 2, 3]
    assert summary_layers([3, 0, -1, 2]) == [2, 3]
    assert summary_layers([0, 1, 2], include_embeddings=True) == [0, 1, 2]
    assert summary_layers([0]) == [0]  # only the embeddings: better them than nothing
    assert summary_layers([-1]) == []


def _stats_mean(per_layer: pd.DataFrame, conv: LayerConvention) -> pd.Series:
    """The stats' checkpoint-level value of the collapse index from its per-layer rows only."""
    table = per_layer.assign(store_id="s", metric="collapse_index", domain="all", span="all")
    out = select_metrics(table, ["collapse_index"], conv)
    return out.set_index("checkpoint")["value"]


@pytest.mark.parametrize("layers", [[0, 1, 2, 3], [0, 3, 6, 9, 11], [0]])
def test_collapse_index_layer_minus_1_is_the_stats_layer_mean(layers: list[int]) -> None:
    ci = collapse_rows(_metrics(layers))
    ci = ci[ci["metric"] == "collapse_index"]
    overall = ci[ci["layer"] == -1].set_index("checkpoint")["value"]
    per_layer = ci[ci["layer"] >= 0]
    stats = _stats_mean(per_layer, LayerConvention())
    assert set(overall.index) == set(CKPTS)
    for c in CKPTS:
        assert overall[c] == pytest.approx(stats[c], rel=1e-12, abs=1e-12)
        expected = per_layer[
            (per_layer["checkpoint"] == c) & per_layer["layer"].isin(summary_layers(layers))
        ]["value"].mean()
        assert overall[c] == pytest.approx(expected, rel=1e-12, abs=1e-12)
    if len(layers) > 1:  # the embeddings' spread is large: taking layer 0 in would show
        with_emb = _stats_mean(per_layer, LayerConvention(include_embeddings=True))
        assert max(abs(with_emb[c] - overall[c]) for c in CKPTS) > 1e-3
