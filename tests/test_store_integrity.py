"""Silent corruption is caught: a deleted or garbled chunk of any variable makes `store validate`
say INVALID naming the checkpoint and the variable, and analysis refuses that checkpoint.

Fault injection on real stores (the synthetic writer and StoreWriter.copy_checkpoint): chunk
files are deleted or their bytes flipped on disk, as a crash or a bad copy would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.cli.main import main
from repcollapse.store_schema import SchemaError, StoreWriter
from repcollapse.store_schema import schema as S
from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store
from repcollapse.store_schema.validate import validate_store

SPEC = SyntheticSpec(
    n_checkpoints=3, n_layers=3, n_tokens=200, n_features=8, vocab_size=30, topk=4, token_chunk=64
)
VICTIM = "A/01-stage"  # slot 1
GOLDEN = Path(__file__).parent / "golden" / "store_v1.zarr"

# (variable, chunk file under the variable for slot 1): hidden layer 2 token chunk 1, token
# variables' chunk 2, a LoRA factor, a behaviour value.
CHUNKS = {
    "hidden": "c/1/2/1/0",
    "topk_ids": "c/1/2/0",
    "topk_logprobs": "c/1/0/0",
    "logit_entropy": "c/1/2",
    "logit_argmax_id": "c/1/1",
    "lora_A__q_proj": "c/1/0/0/0",
    "behavior__target_score": "c/1",
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("integrity") / "exp.zarr"
    make_synthetic_store(store, SPEC)
    return store


@pytest.fixture
def store(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "exp.zarr"
    shutil.copytree(pristine, copy)
    return copy


def _garble(path: Path) -> None:
    """Flip the lowest bit of a byte in the middle: values stay finite, only the checksum sees it."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _validate(store: Path, capsys: pytest.CaptureFixture, *flags: str) -> tuple[int, str]:
    rc = main(["store", "validate", str(store), *flags])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_intact_store_is_valid_with_checksums(pristine: Path, capsys) -> None:
    rc, text = _validate(pristine, capsys)
    assert rc == 0 and text.startswith("valid"), text
    assert "no checksums" not in text
    g = zarr.open_group(str(pristine), mode="r")
    record = json.loads(str(g["checksums_json"][1]))
    # every variable of the slot has one checksum per chunk
    assert len(record["chunks"]["hidden"]) == SPEC.n_layers * 4  # 200 tokens / 64 -> 4 chunks
    assert len(record["chunks"]["topk_ids"]) == 4
    assert {"lora_A__q_proj", "behavior__ece", "name", "behavior_json"} <= set(record["chunks"])


@pytest.mark.parametrize("action", ["delete", "garble"])
@pytest.mark.parametrize("variable", list(CHUNKS))
def test_damaged_chunk_is_invalid(store: Path, variable: str, action: str, capsys) -> None:
    chunk = store / variable / CHUNKS[variable]
    assert chunk.is_file(), chunk
    chunk.unlink() if action == "delete" else _garble(chunk)
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    rc, text = _validate(store, capsys)
    assert rc == 1, text
    assert text.startswith(f"INVALID {store}")
    assert f"checkpoint {VICTIM!r} variable {variable}" in text, text
    assert "'base'" not in text and "A/02-stage" not in text  # only the damaged checkpoint
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()} == before
    if action == "delete":  # --quick reads no value, but sees the missing file
        rc, text = _validate(store, capsys, "--quick")
        assert rc == 1 and "missing_chunk" in text and variable in text, text


@pytest.mark.parametrize("variable", ["hidden", "topk_ids", "logit_entropy", "lora_A__q_proj"])
def test_analyze_refuses_the_damaged_checkpoint(
    store: Path, tmp_path: Path, variable: str, capsys
) -> None:
    _garble(store / variable / CHUNKS[variable])
    out = tmp_path / "tables"
    with pytest.raises(SchemaError, match=f"refusing to analyse checkpoint '{VICTIM}'") as exc:
        run_metrics(
            store, out, metrics=["erank_norm", "entropy", "lora_overlap_prev"], log=lambda m: None
        )
    assert any(variable in p.location and VICTIM in p.location for p in exc.value.problems)
    assert not (out / "metrics.parquet").exists()


def test_analyze_cli_refuses_with_one_message(store: Path, tmp_path: Path, capsys) -> None:
    _garble(store / "topk_ids" / CHUNKS["topk_ids"])
    out = tmp_path / "tables"
    rc = main(["analyze", "metrics", str(store), "--out", str(out), "--metrics", "entropy"])
    text = capsys.readouterr()
    assert rc != 0
    assert f"checkpoint {VICTIM!r} variable topk_ids" in text.out + text.err
    assert "Traceback" not in text.out + text.err
    assert not (out / "metrics.parquet").exists()


def test_analyze_runs_without_the_damaged_checkpoint(store: Path, tmp_path: Path) -> None:
    _garble(store / "hidden" / CHUNKS["hidden"])
    others = ["base", "A/02-stage"]
    summary = run_metrics(
        store, tmp_path / "t", metrics=["erank_norm"], checkpoints=others, log=lambda m: None
    )
    assert summary.computed


def test_analyze_checks_only_the_layers_it_reads(store: Path, tmp_path: Path) -> None:
    _garble(store / "hidden" / CHUNKS["hidden"])  # layer 2
    run_metrics(store, tmp_path / "t", metrics=["erank_norm"], layers=[0], log=lambda m: None)
    with pytest.raises(SchemaError, match="variable hidden chunk 2.1.0"):
        run_metrics(store, tmp_path / "t", metrics=["erank_norm"], layers=[2], log=lambda m: None)


def test_old_store_without_checksums_validates_with_a_warning(tmp_path: Path, capsys) -> None:
    old = tmp_path / "store_v1.zarr"
    shutil.copytree(GOLDEN, old)
    rc, text = _validate(old, capsys)
    assert rc == 0, text
    assert "warning: checkpoint 'base': no checksums recorded" in text
    assert validate_store(old)[0] == []


def test_unembedding_is_checked_against_head_hashes(store: Path, capsys) -> None:
    g = zarr.open_group(str(store), mode="r+")
    w = np.asarray(g["unembedding"][0])
    w[3, 2] += 1
    g["unembedding"][0] = w
    rc, text = _validate(store, capsys)
    assert rc == 1 and "unembedding[head=0]" in text, text


def test_twin_copy_has_valid_checksums(store: Path, capsys) -> None:
    from repcollapse.store_schema.checksums import verify_checkpoints

    w = StoreWriter(store)
    g = zarr.open_group(str(store), mode="r")
    src = w.names().index(VICTIM)
    coords = {k: g[k][src] for k in S.CHECKPOINT_COORDS}
    coords["name"] = "twin/01-stage"
    w.copy_checkpoint(VICTIM, coords, {"target_score": 0.25})
    problems, unrecorded = verify_checkpoints(store, {"twin/01-stage": None})
    assert problems == [] and unrecorded == []
    rc, text = _validate(store, capsys)
    assert rc == 0, text
    slot = w.names().index("twin/01-stage")
    _garble(store / "logit_argmax_id" / f"c/{slot}/0")
    rc, text = _validate(store, capsys)
    assert rc == 1 and "checkpoint 'twin/01-stage' variable logit_argmax_id" in text, text


def test_schema_error_survives_pickling() -> None:
    # A damaged block found inside a dask.distributed worker travels back pickled.
    import pickle

    from repcollapse.store_schema.problems import Problem

    err = SchemaError([Problem("checkpoint 'x' variable hidden chunk 0.1.0", "m", "k")], "ctx")
    back = pickle.loads(pickle.dumps(err))
    assert back.problems == err.problems and str(back) == str(err)
