"""The per-store hidden dtype: float16 (default) or float32, fixed at creation and recorded.

A float32 store holds values beyond float16's 65,504 exactly, validates, passes the
conformance suite, and gives the same metrics as the float16 store of the same (float16-
representable) data; extract writes it with ``--hidden-dtype float32`` and refuses to write into
a store of the other dtype, naming both.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from test_extract_fixtures import make_tiny_checkpoint, write_probe

from repcollapse.cli.main import main
from repcollapse.extract.forward import FLOAT16_MAX, ChunkBuffer, HiddenRangeError
from repcollapse.extract.job import ExtractConfig
from repcollapse.extract.preflight import UsageError
from repcollapse.store_schema import SchemaError, StoreReader, StoreWriter, open_store
from repcollapse.store_schema import schema as S
from repcollapse.store_schema.conformance import StoreConformance, StoreRef
from repcollapse.store_schema.store import StoreLayout, create_store
from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store
from repcollapse.store_schema.validate import validate_store

SPEC = SyntheticSpec(
    n_checkpoints=3, n_layers=3, n_tokens=120, n_features=8, vocab_size=20, topk=3, token_chunk=64
)
SPEC32 = SyntheticSpec(**{**SPEC.__dict__, "hidden_dtype": "float32"})


class TestFloat32Store(StoreConformance):
    """The conformance suite on a float32 store (one checkpoint left incomplete)."""

    @pytest.fixture(scope="class")
    def store(self, tmp_path_factory: pytest.TempPathFactory) -> StoreRef:
        path = tmp_path_factory.mktemp("f32") / "s.zarr"
        make_synthetic_store(path, SPEC32, complete=[True, False, True])
        return str(path), None


def test_default_store_is_float16_and_records_it(tmp_path: Path) -> None:
    make_synthetic_store(tmp_path / "s.zarr", SPEC)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert g.attrs[S.HIDDEN_DTYPE_ATTR] == "float16"
    assert g["hidden"].dtype == np.float16
    assert StoreReader(tmp_path / "s.zarr").hidden_dtype == np.float16
    from repcollapse.store_schema.describe import describe_store

    assert "hidden dtype: float16" in describe_store(tmp_path / "s.zarr")


def test_float32_round_trips_values_beyond_float16(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, SPEC32, complete=[True, True, False])
    w = StoreWriter(path)
    assert w.hidden_dtype == np.float32
    rng = np.random.default_rng(3)
    big = rng.normal(0, 1, size=(SPEC.n_layers, SPEC.n_tokens, SPEC.n_features)).astype(np.float32)
    big[1, 0, 0], big[2, 5, 3], big[1, 70, 1] = 103_795.0, -96_870.25, 1e30  # past float16
    for t0 in range(0, SPEC.n_tokens, SPEC.token_chunk):
        w.write_hidden(2, t0, big[:, t0 : t0 + SPEC.token_chunk])
    w.mark_complete(2)
    problems, _ = validate_store(path)
    assert problems == [], [str(p) for p in problems]
    reader = StoreReader(path)
    slots = reader.slots()
    blocks = reader.hidden_blocks(verify=slots)  # checksums over the float32 bytes
    name = "A/02-stage"
    for layer in range(SPEC.n_layers):
        for t0 in range(0, SPEC.n_tokens, SPEC.token_chunk):
            got = blocks.read(slots[name], layer, t0, min(t0 + 64, SPEC.n_tokens))
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, big[layer, t0 : t0 + 64])
    ds = open_store(path)
    np.testing.assert_array_equal(ds["hidden"].sel(checkpoint=name).values, big)
    from repcollapse.store_schema.describe import describe_store

    assert "hidden dtype: float32" in describe_store(path)


def test_checksum_of_a_changed_float32_value_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, SPEC32)
    g = zarr.open_group(str(path), mode="r+")
    block = np.asarray(g["hidden"][0, 1, 0:64])
    # a change below float16's resolution: only a checksum over the float32 bytes sees it
    block[3, 2] = np.nextafter(block[3, 2], np.float32(np.inf), dtype=np.float32)
    g["hidden"][0, 1, 0:64] = block
    problems, _ = validate_store(path)
    assert problems and all("base" in str(p) for p in problems), [str(p) for p in problems]


def test_validate_refuses_a_dtype_other_than_the_recorded_one(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, SPEC)
    g = zarr.open_group(str(path), mode="r+")
    g.attrs[S.HIDDEN_DTYPE_ATTR] = "float32"  # the array is float16
    problems, _ = validate_store(path)
    msgs = [str(p) for p in problems if p.kind == "wrong_dtype"]
    assert any("hidden" in m and "float32" in m and "float16" in m for m in msgs), problems
    g.attrs[S.HIDDEN_DTYPE_ATTR] = "bfloat16"
    problems, _ = validate_store(path)
    assert any(p.location == "attrs.hidden_dtype" and "bfloat16" in p.message for p in problems), (
        problems
    )
    del g.attrs[S.HIDDEN_DTYPE_ATTR]  # older stores record none: float16
    problems, _ = validate_store(path)
    assert problems == [], [str(p) for p in problems]


def test_create_store_refuses_unknown_or_conflicting_dtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"StoreLayout.hidden_dtype: expected one of"):
        StoreLayout(n_layers=2, n_features=4, n_tokens=10, vocab_size=5, hidden_dtype="bfloat16")
    layout = StoreLayout(n_layers=2, n_features=4, n_tokens=10, vocab_size=5, topk=2)
    with pytest.raises(SchemaError, match="hidden_dtype"):
        create_store(tmp_path / "x.zarr", layout, {}, {S.HIDDEN_DTYPE_ATTR: "float32"})
    assert not (tmp_path / "x.zarr").exists()


def test_analysis_of_float32_store_equals_float16_store(tmp_path: Path) -> None:
    """Same float16-representable values in both stores: same metrics to float tolerance."""
    from repcollapse.analyze.engine.runner import run_metrics
    from repcollapse.analyze.options import Options

    small = {"n_checkpoints": 3, "n_layers": 3, "n_tokens": 600, "n_features": 12}
    out = {}
    for dtype in ("float16", "float32"):
        spec = SyntheticSpec(**{**small, "token_chunk": 128, "hidden_dtype": dtype})
        make_synthetic_store(tmp_path / f"{dtype}.zarr", spec)
        run_metrics(
            tmp_path / f"{dtype}.zarr",
            tmp_path / dtype,
            options=Options(precision="float64"),
            log=lambda _: None,
        )
        table = pd.read_parquet(tmp_path / dtype / "metrics.parquet")
        out[dtype] = table.set_index(["metric", "checkpoint", "layer", "domain", "span"])["value"]
    a, b = out["float32"].sort_index().align(out["float16"].sort_index(), join="outer")
    assert len(a) > 100 and a.isna().sum() == b.isna().sum()
    both = a.notna() & b.notna()
    rel = np.abs(a[both] - b[both]) / np.maximum(np.abs(b[both]), 1e-3)
    assert float(rel.max()) <= 1e-9


def test_check_range_follows_the_store_dtype(tmp_path: Path) -> None:
    for dtype in ("float16", "float32"):
        spec = SyntheticSpec(n_checkpoints=2, n_tokens=40, hidden_dtype=dtype)
        make_synthetic_store(tmp_path / f"{dtype}.zarr", spec)
    kw = {"n_layers": 4, "n_features": 16, "n_tokens": 40, "topk": 5}
    buf16 = ChunkBuffer(StoreWriter(tmp_path / "float16.zarr"), 1, **kw)
    buf32 = ChunkBuffer(StoreWriter(tmp_path / "float32.zarr"), 1, **kw)
    with pytest.raises(HiddenRangeError, match="--hidden-dtype float32"):
        buf16.check_range(np.array([1.0, 9e4, 1.0, 1.0]))
    buf32.check_range(np.array([1.0, 9e4, 1e30, FLOAT16_MAX]))  # finite: fits float32
    for bad, found in ((np.nan, "found NaN in layer 1"), (np.inf, "max |h| inf in layer 1")):
        with pytest.raises(HiddenRangeError, match=re.escape(found)) as e:
            buf32.check_range(np.array([1.0, bad, 1.0, 1.0]))
        assert "float32" in str(e.value)


def test_extract_config_refuses_other_dtypes() -> None:
    with pytest.raises(UsageError, match=r"ExtractConfig.hidden_dtype \(--hidden-dtype\)"):
        ExtractConfig(hidden_dtype="bfloat16")
    assert ExtractConfig().hidden_dtype == "float16"
    assert ExtractConfig(hidden_dtype="float32").recorded()["hidden_dtype"] == "float32"


def _scaled_model(path: Path, factor: float) -> Path:
    """A tiny model whose block 1 MLP output is scaled: stored layer 2 exceeds float16."""
    from transformers import AutoModelForCausalLM

    make_tiny_checkpoint(path, n_layers=3)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.mul_(factor)
    model.save_pretrained(str(path))
    return path


def test_extract_float32_stores_what_float16_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = _scaled_model(tmp_path / "base", 1e6)
    probe = write_probe(tmp_path / "p.jsonl")
    store = tmp_path / "exp.zarr"
    argv = ["extract", "--store", str(store), "--probe", str(probe), "--batch-size", "4"]
    argv += ["--token-chunk", "64", "--no-progress"]
    assert main([*argv, "--hidden-dtype", "float32", str(ckpt)]) == 0, capsys.readouterr().err
    ds = open_store(store)
    assert ds.sizes["checkpoint"] == 1 and ds["hidden"].dtype == np.float32
    hidden = np.asarray(ds["hidden"].values)
    assert np.isfinite(hidden).all() and np.abs(hidden[0, 2]).max() > FLOAT16_MAX
    assert zarr.open_group(str(store), mode="r").attrs["hidden_dtype"] == "float32"
    assert validate_store(store)[0] == []
    # The same store with the default (float16): refused before anything is written, naming
    # both dtypes; the store is unchanged.
    before = sorted(p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file())
    capsys.readouterr()
    assert main([*argv, str(ckpt)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(r"hidden: dtype.*store has 'float32'.*--hidden-dtype.*'float16'", err), err
    assert sorted(p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()) == before


# -- the study: a family whose hidden states exceed float16 gets a float32 store ----------------


def _study(tmp_path: Path, extract: str = "") -> object:
    from repcollapse.study.config import parse_study

    for d in ("tinyA", "tinyB"):
        (tmp_path / d).mkdir(exist_ok=True)
        (tmp_path / d / "config.json").write_text("{}")
    raw = {"name": "t", "families": ["tinyA", "tinyB"], "sequences": ["D"], "seeds": [0]}
    if extract:
        import tomllib

        raw["extract"] = tomllib.loads(extract)
    return parse_study(raw, "STUDY.toml", tmp_path)


def test_study_hidden_dtype_per_family(tmp_path: Path) -> None:
    from repcollapse.study.config import FAMILY_HIDDEN_DTYPES, StudyError

    assert FAMILY_HIDDEN_DTYPES["gemma3-270m"] == "float32"
    plain = _study(tmp_path)
    assert [f.hidden_dtype for f in plain.families] == ["float16", "float16"]
    study = _study(tmp_path, 'hidden_dtype = { tinyB = "float32" }')
    assert [f.hidden_dtype for f in study.families] == ["float16", "float32"]
    with pytest.raises(StudyError, match=r"extract.hidden_dtype.tinyB': expected one of"):
        _study(tmp_path, 'hidden_dtype = { tinyB = "bfloat16" }')
    with pytest.raises(StudyError, match=r"extract.hidden_dtype.other': expected one of the fam"):
        _study(tmp_path, 'hidden_dtype = { other = "float32" }')


def test_study_extract_cell_passes_the_family_dtype(tmp_path: Path) -> None:
    from repcollapse.study.plan import Cell
    from repcollapse.study.runner import StudyRun

    study = _study(tmp_path, 'hidden_dtype = { tinyB = "float32" }')
    calls: list[list[str]] = []
    run = StudyRun(study, tmp_path / "out", executor=lambda args, log: calls.append(list(args)))
    for fam, dtype in (("tinyA", "float16"), ("tinyB", "float32")):
        run.execute(Cell("extract", fam))
        extract = next(c for c in calls if c[0] == "extract")
        assert extract[extract.index("--hidden-dtype") + 1] == dtype
        calls.clear()
    # the default keeps the fingerprint of extractions done before the option existed
    assert "hidden_dtype" not in run.fingerprint(Cell("extract", "tinyA"))
    assert run.fingerprint(Cell("extract", "tinyB"))["hidden_dtype"] == "float32"
