"""Codecs of ``hidden`` (repcollapse.store_schema.codecs): lossless (default), bitround:K, int8-token.

Round trips within the stated error (bitround:K: relative error <= 2^-(K+1) <= 2^-K per value;
int8-token: |error| <= scale / 2 with scale = max |h_token| / 127), the codec recorded in the
store and in ``hidden``'s metadata and checked on read, one codec per store (a second extract
with another --codec refused naming both), lossless bitwise unchanged; the conformance suite
on a store of each lossy codec.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from test_extract_fixtures import make_tiny_checkpoint, write_probe

from repcollapse.cli.main import main
from repcollapse.extract.job import ExtractConfig
from repcollapse.extract.preflight import UsageError
from repcollapse.store_schema import SchemaError, StoreReader, StoreWriter, open_store
from repcollapse.store_schema import codecs as C
from repcollapse.store_schema import schema as S
from repcollapse.store_schema.conformance import StoreConformance, StoreRef
from repcollapse.store_schema.testing import (
    SyntheticSpec,
    make_synthetic_store,
    synthetic_hidden,
    synthetic_token_coords,
)
from repcollapse.store_schema.validate import validate_store

SPEC = SyntheticSpec(
    n_checkpoints=3, n_layers=3, n_tokens=120, n_features=8, vocab_size=20, topk=3, token_chunk=64
)


def _spec(codec: str, **kw: object) -> SyntheticSpec:
    return SyntheticSpec(**{**SPEC.__dict__, "codec": codec, **kw})


def _original(spec: SyntheticSpec, checkpoint: int) -> np.ndarray:
    """(layer, token, feature) float16 values the synthetic writer handed to write_hidden."""
    coords = synthetic_token_coords(spec)
    return np.stack([synthetic_hidden(spec, coords, checkpoint, i) for i in range(spec.n_layers)])


def _read_all(path: Path, name: str) -> np.ndarray:
    """Every block of one checkpoint through the checked block reader."""
    reader = StoreReader(path)
    slots = reader.slots()
    blocks = reader.hidden_blocks(verify=slots)
    step = reader.token_chunk
    return np.stack(
        [
            np.concatenate(
                [
                    blocks.read(slots[name], layer, t0, min(t0 + step, reader.n_tokens))
                    for t0 in range(0, reader.n_tokens, step)
                ]
            )
            for layer in range(reader.n_layers)
        ]
    )


class TestBitroundStore(StoreConformance):
    @pytest.fixture(scope="class")
    def store(self, tmp_path_factory: pytest.TempPathFactory) -> StoreRef:
        path = tmp_path_factory.mktemp("br") / "s.zarr"
        make_synthetic_store(path, _spec("bitround:4"), complete=[True, False, True])
        return str(path), None


class TestInt8TokenStore(StoreConformance):
    @pytest.fixture(scope="class")
    def store(self, tmp_path_factory: pytest.TempPathFactory) -> StoreRef:
        path = tmp_path_factory.mktemp("i8") / "s.zarr"
        make_synthetic_store(path, _spec("int8-token"), complete=[True, False, True])
        return str(path), None


def test_parse_codec_names_and_refusals() -> None:
    assert C.parse_codec("lossless") == C.HiddenCodec("lossless")
    assert C.parse_codec("bitround:7") == C.HiddenCodec("bitround", 7)
    assert C.parse_codec("int8-token").name == "int8-token"
    for bad in ("bitround:0", "bitround:11", "bitround", "zfp", "int8", "", None, "Lossless"):
        with pytest.raises(ValueError, match=r"^where: expected .*found"):
            C.parse_codec(bad, "where")
    with pytest.raises(UsageError, match=r"ExtractConfig.codec \(--codec\).*'bitround:12'"):
        ExtractConfig(codec="bitround:12")
    assert ExtractConfig().codec == "lossless"
    assert ExtractConfig(codec="int8-token").recorded()["codec"] == "int8-token"


@pytest.mark.parametrize("keepbits", [1, 3, 5, 9])
def test_bitround_round_trip_within_two_to_minus_k(tmp_path: Path, keepbits: int) -> None:
    spec = _spec(f"bitround:{keepbits}")
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, spec)
    want = _original(spec, 1).astype(np.float64)
    got = _read_all(path, "A/01-stage")
    assert got.dtype == np.float16
    err = np.abs(got.astype(np.float64) - want)
    # round to nearest: 2^-(K+1) relative; float16 subnormals (|h| < 2^-14) on the absolute
    # scale of the smallest normal
    bound = 2.0 ** -(keepbits + 1) * np.maximum(np.abs(want), 2.0**-14)
    assert (err <= bound).all(), float((err / bound).max())
    normal = np.abs(want) >= 2.0**-14
    assert (err[normal] / np.abs(want[normal])).max() <= 2.0**-keepbits
    assert err.max() > 0  # it did round
    # only K mantissa bits are left: the dropped low bits are zero
    low = got.view(np.uint16) & np.uint16((1 << (10 - keepbits)) - 1)
    assert not low.any()
    # the view a third-party reader gets (xarray) is the same values
    ds = open_store(path)
    np.testing.assert_array_equal(ds["hidden"].sel(checkpoint="A/01-stage").values, got)
    hidden = zarr.open_group(str(path), mode="r")["hidden"]
    assert hidden.attrs[C.CODEC_ATTR] == f"bitround:{keepbits}"
    # only codecs of the Zarr v3 specification: any Zarr implementation reads the values
    assert [type(c).__name__ for c in hidden.metadata.codecs] == ["BytesCodec", "BloscCodec"]


def test_int8_token_round_trip_within_half_a_scale(tmp_path: Path) -> None:
    spec = _spec("int8-token")
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, spec)
    want = _original(spec, 2).astype(np.float64)
    got = _read_all(path, "A/02-stage")
    assert got.dtype == np.float32
    scale = np.abs(want).max(axis=-1, keepdims=True) / 127  # computed from the originals
    err = np.abs(got.astype(np.float64) - want)
    assert (err <= scale / 2 * (1 + 1e-5)).all(), float((err / scale).max())
    assert err.max() > 0
    # the pair as stored, read by anyone with the documented formula
    g = zarr.open_group(str(path), mode="r")
    assert g["hidden"].dtype == np.int8 and g[C.SCALE.name].dtype == np.float32
    q, s = np.asarray(g["hidden"][2]), np.asarray(g[C.SCALE.name][2])
    np.testing.assert_array_equal(got, q.astype(np.float32) * s[..., None])
    np.testing.assert_allclose(s, scale[..., 0], rtol=1e-6)
    assert np.abs(q).max(axis=-1).min() == 127  # each token's largest value maps to +-127
    ds = open_store(path)
    assert C.SCALE.name not in ds  # the view holds activations
    from repcollapse.store_schema.describe import describe_store

    assert "hidden dtype: float16  codec: int8-token" in describe_store(path)
    np.testing.assert_array_equal(ds["hidden"].sel(checkpoint="A/02-stage").values, got)


def test_int8_of_a_zero_token_and_non_finite_values() -> None:
    x = np.zeros((2, 3, 4), np.float16)
    x[1, 2] = [1.0, -2.0, 0.5, 0.0]
    q, s = C.quantise_int8(x)
    assert s[0, 0] == 0 and not q[0].any()
    np.testing.assert_array_equal(C.dequantise_int8(q, s)[0], 0)
    assert q[1, 2].tolist() == [64, -127, 32, 0]  # 1 / (2/127) = 63.5 -> 64 (ties to even)
    x[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="int8-token: expected finite"):
        C.quantise_int8(x)


def test_lossless_is_bitwise_unchanged_and_uncompressed(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, SPEC)
    got = _read_all(path, "base")
    np.testing.assert_array_equal(got.view(np.uint16), _original(SPEC, 0).view(np.uint16))
    hidden = zarr.open_group(str(path), mode="r")["hidden"]
    assert [type(c).__name__ for c in hidden.metadata.codecs] == ["BytesCodec"]
    assert hidden.attrs[C.CODEC_ATTR] == "lossless"
    assert zarr.open_group(str(path), mode="r").attrs[C.CODEC_ATTR] == "lossless"


def test_bitround_refuses_to_round_past_float16() -> None:
    x = np.array([[1.0, 65504.0]], np.float16)
    with pytest.raises(ValueError, match=r"bitround:3: \|h\| 65504 rounds past the largest"):
        C.bitround(x, 3)
    np.testing.assert_array_equal(C.bitround(x, 10), x)  # all bits kept: identity


def test_codec_recorded_and_unknown_codec_refused_on_read(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, _spec("bitround:6"))
    g = zarr.open_group(str(path), mode="r+")
    assert g.attrs[C.CODEC_ATTR] == "bitround:6" and g["hidden"].attrs[C.CODEC_ATTR] == "bitround:6"
    assert StoreReader(path).codec == C.HiddenCodec("bitround", 6)
    from repcollapse.store_schema.describe import describe_store

    assert "hidden dtype: float16  codec: bitround:6" in describe_store(path)
    g.attrs[C.CODEC_ATTR] = "zfp:1e-3"
    for read in (StoreReader, open_store, StoreWriter):
        with pytest.raises(SchemaError, match=r"attrs.hidden_codec: expected one of .*'zfp:1e-3'"):
            read(path)
    problems, _ = validate_store(path)
    assert [p.kind for p in problems if p.location == "attrs.hidden_codec"] == ["unknown_codec"]


def test_validate_checks_the_codec_against_the_array(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, _spec("bitround:6"))
    assert validate_store(path)[0] == []
    g = zarr.open_group(str(path), mode="r+")
    g.attrs[C.CODEC_ATTR] = "bitround:5"  # the array's values keep 6 bits
    problems, _ = validate_store(path)
    msgs = [str(p) for p in problems if p.kind == "codec_mismatch"]
    assert any("'bitround:5'" in m and "'bitround:6'" in m for m in msgs), msgs
    assert any("at most 5 mantissa bits" in m and "hidden[checkpoint=" in m for m in msgs), msgs
    g.attrs[C.CODEC_ATTR] = "bitround:6"
    block = np.asarray(g["hidden"][1, 1, 0:64])
    block[3, 2] = np.nextafter(block[3, 2], np.float16(np.inf), dtype=np.float16)  # unrounded
    g["hidden"][1, 1, 0:64] = block
    kinds = sorted(p.kind for p in validate_store(path)[0])
    assert kinds == ["checksum_mismatch", "codec_mismatch"], kinds
    g.attrs[C.CODEC_ATTR] = "lossless"  # a lossy array passed off as lossless
    assert "codec_mismatch" in {p.kind for p in validate_store(path)[0]}
    g.attrs[C.CODEC_ATTR] = "int8-token"  # float16 array, no scales
    kinds = {p.kind for p in validate_store(path)[0]}
    assert {"codec_mismatch", "wrong_dtype", "missing_variable"} <= kinds, kinds


def test_int8_scale_checksummed(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, _spec("int8-token"))
    g = zarr.open_group(str(path), mode="r+")
    g[C.SCALE.name][1, 2, 5] = np.float32(g[C.SCALE.name][1, 2, 5]) * 2
    problems, _ = validate_store(path)
    assert [(p.kind, "hidden_scale" in p.location) for p in problems] == [
        ("checksum_mismatch", True)
    ]


def test_twin_copy_of_int8_store_copies_codes(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, _spec("int8-token"))
    w = StoreWriter(path)
    coords = StoreReader(path).checkpoint_values("A/01-stage", S.CHECKPOINT_COORDS)
    coords["name"] = "A/01-twin"
    w.copy_checkpoint("A/01-stage", coords, {"target_score": 0.1})
    assert validate_store(path)[0] == []
    np.testing.assert_array_equal(_read_all(path, "A/01-twin"), _read_all(path, "A/01-stage"))


def test_analysis_reads_int8_and_bitround_stores(tmp_path: Path) -> None:
    """run_metrics on lossy stores: floats in, metrics close to the lossless store's."""
    import pandas as pd

    from repcollapse.analyze.engine.runner import run_metrics

    out = {}
    for codec in ("lossless", "bitround:7", "int8-token"):
        spec = _spec(codec, n_tokens=600, n_features=12, token_chunk=128)
        make_synthetic_store(tmp_path / f"{codec}.zarr", spec)
        run_metrics(
            tmp_path / f"{codec}.zarr",
            tmp_path / codec.replace(":", ""),
            metrics=["erank", "pr", "cka_base", "aniso_centered"],
            log=lambda _: None,
        )
        table = pd.read_parquet(tmp_path / codec.replace(":", "") / "metrics.parquet")
        table = table[table["metric"].isin(["erank", "pr", "cka_base", "aniso_centered"])]
        out[codec] = table.set_index(["metric", "checkpoint", "layer", "domain", "span"])["value"]
    ref = out["lossless"].sort_index()
    for codec in ("bitround:7", "int8-token"):
        got = out[codec].sort_index()
        assert got.index.equals(ref.index)
        # per metric: the worst error against the metric's largest value (some sit near 0)
        err = (got - ref).abs().groupby(level="metric").max()
        scale = ref.abs().groupby(level="metric").max()
        worst = (err / scale).max()
        assert 0 < worst < 5e-3, (codec, (err / scale).to_dict())


def test_extract_records_codec_and_refuses_another(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base = make_tiny_checkpoint(tmp_path / "base", n_layers=2)
    other = make_tiny_checkpoint(
        tmp_path / "s1", seed=1, n_layers=2, name="A/01-x", stage_index=1, stage_kind="sft",
        parent="base", sequence="A", stage_domain="math",
    )  # fmt: skip
    probe = write_probe(tmp_path / "p.jsonl")
    argv = ["extract", "--probe", str(probe), "--batch-size", "4", "--token-chunk", "64"]
    argv += ["--no-progress"]
    stores = {}
    for codec in ("lossless", "bitround:10", "int8-token"):
        stores[codec] = tmp_path / f"{codec.replace(':', '')}.zarr"
        rc = main([*argv, "--store", str(stores[codec]), "--codec", codec, str(base)])
        assert rc == 0, capsys.readouterr().err
        assert zarr.open_group(str(stores[codec]), mode="r").attrs[C.CODEC_ATTR] == codec
        assert validate_store(stores[codec])[0] == []
    lossless = np.asarray(open_store(stores["lossless"])["hidden"].values)
    # bitround keeping all 10 bits is the identity: the lossless values bit for bit
    kept = np.asarray(open_store(stores["bitround:10"])["hidden"].values)
    np.testing.assert_array_equal(kept.view(np.uint16), lossless.view(np.uint16))
    int8 = np.asarray(open_store(stores["int8-token"])["hidden"].values)
    scale = np.abs(lossless.astype(np.float64)).max(axis=-1, keepdims=True) / 127
    assert (np.abs(int8 - lossless.astype(np.float64)) <= scale / 2 * (1 + 1e-5)).all()
    capsys.readouterr()
    rc = main([*argv, "--store", str(stores["int8-token"]), "--codec", "bitround:5", str(other)])
    err = capsys.readouterr().err
    assert rc == 1 and "attrs.hidden_codec" in err, err
    assert "store has 'int8-token', this run (--codec) has 'bitround:5'" in err, err
    assert StoreReader(stores["int8-token"]).slots() == {"base": 0}  # nothing written
    assert main([*argv, "--store", str(probe.parent / "x.zarr"), "--codec", "zfp", str(base)]) == 2
    assert "--codec" in capsys.readouterr().err


def test_int8_kill_mid_hidden_and_resume_is_identical(tmp_path: Path) -> None:
    """SIGKILL between two hidden chunks of an int8-token extraction, then re-run: the store
    equals an uninterrupted one array for array (codes and scales of the resumed slot)."""
    import os
    import signal
    import subprocess
    import sys

    from repcollapse.extract.run import KILL_ENV, extract
    from repcollapse.store_schema.protocol import observe_steps

    base = make_tiny_checkpoint(tmp_path / "base", n_layers=2)
    probe = write_probe(tmp_path / "p.jsonl")
    config = ExtractConfig(batch_size=4, token_chunk=64, codec="int8-token", progress=False)
    labels: list[str] = []
    with observe_steps(labels.append):
        extract(tmp_path / "ref.zarr", probe, [base], config)
    writes = [i for i, label in enumerate(labels) if label == "extract: write"]
    assert len(writes) >= 6
    store = tmp_path / "s.zarr"
    code = "import sys; from repcollapse.cli.main import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "extract", "--store", str(store), "--probe", str(probe)]
    argv += ["--batch-size", "4", "--token-chunk", "64", "--codec", "int8-token", "--no-progress"]
    env = {**os.environ, KILL_ENV: str(writes[len(writes) // 2] + 1)}
    proc = subprocess.run([*argv, str(base)], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert StoreReader(store).complete_checkpoints() == []
    extract(store, probe, [base], config)
    assert validate_store(store)[0] == []
    ga = zarr.open_group(str(store), mode="r")
    gb = zarr.open_group(str(tmp_path / "ref.zarr"), mode="r")
    for name in ("hidden", C.SCALE.name, "checksums_json"):
        np.testing.assert_array_equal(ga[name][...], gb[name][...], err_msg=name)
