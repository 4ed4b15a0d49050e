"""`analyze generated`: distinct-n and spectra of the generated-output probe, against brute force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_extract_fixtures import make_lora_stage, make_tiny_checkpoint, write_probe

from repcollapse.analyze.engine.generated import distinct_n, run_generated
from repcollapse.analyze.tables.query import query
from repcollapse.cli.main import main
from repcollapse.extract.run import ExtractConfig, extract
from repcollapse.store_schema import open_store


def test_distinct_n_counts_pooled_ngrams() -> None:
    # bigrams: (a b) (b a) (a b) | (a b): 2 distinct of 4; words: a b a b a b: 2 of 6
    assert distinct_n(["a b a b", "a b"], 2) == pytest.approx(2 / 4)
    assert distinct_n(["a b a b", "a b"], 1) == pytest.approx(2 / 6)
    assert distinct_n(["x y z"], 3) == 1.0
    assert distinct_n(["a"], 2) == 0.0 and distinct_n([], 1) == 0.0


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("gen")
    base = make_tiny_checkpoint(root / "base")
    sft, _ = make_lora_stage(base, root / "sft")
    probe = write_probe(root / "probe.jsonl")
    store = root / "gen.zarr"
    cfg = ExtractConfig(token_chunk=64, generate=3, gen_max_new_tokens=12, progress=False)
    extract(store, probe, [base, sft], cfg)
    out = root / "tables"
    table = run_generated(store, out, layers=[0, -1], log=lambda _: None)
    return {"store": store, "out": out, "table": table}


def test_text_metrics_equal_a_recount_of_the_completions(generated: dict) -> None:
    table = generated["table"]
    for ckpt, group in (("base", "generated/base"), ("A/01-math", "generated/A__01-math")):
        ds = open_store(generated["store"], group=group)
        completions = ds.attrs["completions"]
        domain = dict(zip(ds["example"].values.tolist(), ds["domain"].values.tolist(), strict=True))
        rows = table[(table.checkpoint == ckpt) & (table.layer == -1)]
        for dom in ["all", *sorted({domain[c["example"]] for c in completions})]:
            cs = [c for c in completions if dom == "all" or domain[c["example"]] == dom]
            got = rows[rows.domain == dom].set_index("metric")["value"]
            for n in (1, 2, 3):
                assert got[f"distinct_{n}"] == pytest.approx(distinct_n([c["text"] for c in cs], n))
            assert got["completion_tokens"] == pytest.approx(np.mean([c["n_tokens"] for c in cs]))


def test_response_span_spectrum_equals_numpy(generated: dict) -> None:
    table = generated["table"]
    ds = open_store(generated["store"], group="generated/A__01-math")
    keep = (ds["span"].values == "response") & ~ds["is_sink"].values.astype(bool)
    n_layers = ds.sizes["layer"]
    for layer in (0, n_layers - 1):
        H = ds["hidden"].values[0, layer][keep].astype(np.float64)
        lam = np.clip(np.linalg.eigvalsh(np.cov(H, rowvar=False)), 0, None)
        p = lam[lam > 0] / lam.sum()
        row = table[
            (table.checkpoint == "A/01-math")
            & (table.metric == "erank")
            & (table.layer == layer)
            & (table.span == "response")
        ]
        assert len(row) == 1
        assert row["value"].iloc[0] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-5)
    # metrics that need a reference checkpoint are not asked of a one-checkpoint sub-store
    assert not table.metric.str.startswith(("cka", "drift", "collapse")).any()


def test_table_is_queryable_and_cli_refuses_a_store_without_generations(
    generated: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    df = query(
        "select checkpoint, count(*) n from generated where metric = 'distinct_2' group by 1",
        generated["out"],
    )
    assert set(df.checkpoint) == {"base", "A/01-math"}
    assert pd.read_parquet(generated["out"] / "generated.parquet").equals(generated["table"])
    plain = tmp_path / "plain.zarr"
    base = make_tiny_checkpoint(tmp_path / "b")
    extract(plain, write_probe(tmp_path / "p.jsonl"), [base], ExtractConfig(progress=False))
    assert main(["analyze", "generated", str(plain), "--out", str(tmp_path / "t")]) == 2
    assert "--generate" in capsys.readouterr().err
