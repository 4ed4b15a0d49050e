"""The store contract: round trips, every broken-store kind, read-only validation, golden store."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from repcollapse.store_schema import (
    SCHEMA_VERSION,
    SchemaError,
    StoreWriter,
    open_store,
    validate_store,
)
from repcollapse.store_schema.schema import CHECKPOINT_COORDS, TOKEN_COORDS
from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store, synthetic_hidden

SPEC = SyntheticSpec(
    n_checkpoints=2, n_layers=3, n_tokens=120, n_features=8, vocab_size=20, topk=3, token_chunk=64
)
REPO = Path(__file__).resolve().parents[1]


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, SPEC)
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "repcollapse.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def test_round_trip_is_bit_identical(store: Path) -> None:
    ds = open_store(store)
    assert list(ds.checkpoint.values) == ["base", "A/01-stage"]
    from repcollapse.store_schema.testing import synthetic_token_coords

    tc = synthetic_token_coords(SPEC)
    for name in TOKEN_COORDS:
        np.testing.assert_array_equal(np.asarray(ds[name].values), tc[name])
    for c in range(2):
        for layer in range(SPEC.n_layers):
            expected = synthetic_hidden(SPEC, tc, c, layer)
            got = ds["hidden"].isel(checkpoint=c, layer=layer).values
            assert got.dtype == np.float16
            assert got.tobytes() == expected.tobytes()
    assert set(CHECKPOINT_COORDS) <= set(ds.coords)
    assert ds["stage_index"].values.tolist() == [0, 1]
    # every variable is self-describing
    for name, var in ds.variables.items():
        if name != "checkpoint":
            assert var.attrs.get("description"), name


def test_incomplete_checkpoint_is_hidden_from_readers(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    make_synthetic_store(
        path, SyntheticSpec(**{**SPEC.__dict__, "n_checkpoints": 3}), complete=[True, False, True]
    )
    ds = open_store(path)
    assert list(ds.checkpoint.values) == ["base", "A/02-stage"]
    assert open_store(path, include_incomplete=True).sizes["checkpoint"] == 3


def test_reserve_reuses_incomplete_slot_and_refuses_complete(store: Path) -> None:
    w = StoreWriter(store)
    coords = {k: 0 for k in CHECKPOINT_COORDS} | {
        k: ""
        for k in (
            "sequence",
            "stage_kind",
            "stage_domain",
            "parent",
            "mitigation",
            "manifest_json",
            "behavior_json",
        )
    }
    coords["name"] = "A/02-new"
    i = w.reserve(coords)
    assert i == 2 and w.status("A/02-new") == "incomplete"
    assert w.reserve(coords) == 2  # resume: same slot
    with pytest.raises(FileExistsError, match="already complete"):
        w.reserve(coords | {"name": "base"})


def test_memory_url(tmp_path: Path) -> None:
    make_synthetic_store("memory://golden-test", SPEC)
    ds = open_store("memory://golden-test")
    assert ds.sizes["checkpoint"] == 2
    problems, _ = validate_store("memory://golden-test")
    assert problems == []


# --- broken stores: one specific message each, non-zero exit, store untouched --------------


def _missing_variable(p: Path) -> None:
    shutil.rmtree(p / "logit_entropy")


def _wrong_dims(p: Path) -> None:
    meta = json.loads((p / "logit_margin" / "zarr.json").read_text())
    meta["dimension_names"] = ["checkpoint", "position"]
    (p / "logit_margin" / "zarr.json").write_text(json.dumps(meta))


def _wrong_dtype(p: Path) -> None:
    g = zarr.open_group(str(p), mode="r+")
    del g["logit_top1_prob"]
    a = g.create_array(
        "logit_top1_prob",
        shape=(2, SPEC.n_tokens),
        chunks=(1, 64),
        dtype="float64",
        dimension_names=("checkpoint", "token"),
    )
    a.attrs["description"] = "x"


def _newer_schema(p: Path) -> None:
    g = zarr.open_group(str(p), mode="r+")
    g.attrs["schema_version"] = SCHEMA_VERSION + 1


def _incomplete(p: Path) -> None:
    zarr.open_group(str(p), mode="r+")["complete"][1] = 0


def _non_finite(p: Path) -> None:
    zarr.open_group(str(p), mode="r+")["hidden"][1, 2, 5, 3] = np.inf


def _wrong_length_coord(p: Path) -> None:
    g = zarr.open_group(str(p), mode="r+")
    del g["position"]
    a = g.create_array(
        "position",
        shape=(SPEC.n_tokens - 1,),
        chunks=(SPEC.n_tokens,),
        dtype="int32",
        dimension_names=("token",),
    )
    a.attrs["description"] = "x"


BROKEN = {
    "missing_variable": (_missing_variable, "logit_entropy", "found none"),
    "wrong_dims": (
        _wrong_dims,
        "logit_margin",
        "expected dims ('checkpoint', 'token'), found ('checkpoint', 'position')",
    ),
    "wrong_dtype": (_wrong_dtype, "logit_top1_prob", "expected dtype float32, found float64"),
    "newer_schema": (
        _newer_schema,
        "schema_version",
        f"store has schema version {SCHEMA_VERSION + 1}, this code reads up to {SCHEMA_VERSION}",
    ),
    "incomplete_checkpoint": (_incomplete, "A/01-stage", "expected complete = 1, found 0"),
    "non_finite": (_non_finite, "hidden[checkpoint='A/01-stage', layer=2]", "found 1 NaN/inf"),
    "wrong_length": (
        _wrong_length_coord,
        "position",
        f"expected token of length {SPEC.n_tokens}, found {SPEC.n_tokens - 1}",
    ),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_validate_reports_each_broken_kind(store: Path, kind: str) -> None:
    breaker, location, message = BROKEN[kind]
    assert validate_store(store)[0] == []
    breaker(store)
    before = tree_digest(store)
    problems, _ = validate_store(store)
    matching = [p for p in problems if p.kind == kind]
    assert matching, problems
    assert any(location in p.location and message in p.message for p in matching), matching
    result = cli("store", "validate", str(store))
    assert result.returncode == 1
    assert message in result.stdout
    assert tree_digest(store) == before, "validate modified the store"


def test_open_refuses_newer_schema_naming_both_versions(store: Path) -> None:
    _newer_schema(store)
    with pytest.raises(
        SchemaError,
        match=f"schema version {SCHEMA_VERSION + 1}, this code reads up to {SCHEMA_VERSION}",
    ):
        open_store(store)


def test_cli_validate_and_describe_on_valid_store(store: Path) -> None:
    result = cli("store", "validate", str(store))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("valid ") and "2 complete checkpoint(s)" in result.stdout
    result = cli("store", "describe", str(store))
    assert result.returncode == 0
    assert "layers: 3  features: 8  tokens: 120" in result.stdout
    assert "size on disk" in result.stdout


def test_not_a_store(tmp_path: Path) -> None:
    problems, _ = validate_store(tmp_path / "nothing-here")
    assert problems and problems[0].kind == "not_a_store"


# --- golden stores: every schema version must still open every old golden store -----------


@pytest.mark.parametrize(
    "golden", sorted((Path(__file__).parent / "golden").glob("store_v*.zarr")), ids=lambda p: p.name
)
def test_golden_store_opens(golden: Path, tmp_path: Path) -> None:
    from make_golden import fingerprint

    copy = tmp_path / golden.name
    shutil.copytree(golden, copy)
    ds = open_store(copy)
    expected = json.loads(
        golden.with_name(golden.name.replace(".zarr", ".fingerprint.json")).read_text()
    )
    got = fingerprint(ds)
    # open_store's derived layer coordinate (0 .. n - 1) is no stored variable of the golden store
    np.testing.assert_array_equal(ds["layer"].values, np.arange(ds.sizes["layer"]))
    got.pop("layer")
    assert got == expected
    assert validate_store(copy)[0] == []


# --- the import boundary: the store CLI never needs the model stack ------------------------------


def test_store_cli_never_imports_torch(store: Path) -> None:
    code = (
        "import sys; from repcollapse.cli.main import main; "
        f"main(['store', 'describe', {str(store)!r}]); "
        "heavy = ('torch', 'transformers', 'peft', 'trl'); "
        # the data command's flags come from repcollapse.train.data.config, a plain dataclass: nothing else
        "light = ('repcollapse.train', 'repcollapse.train.data', 'repcollapse.train.data.config'); "
        "ours = lambda m, pkg: m == pkg or m.startswith(pkg + '.'); "
        "bad = [m for m in sys.modules if m.split('.')[0] in heavy "
        "or ours(m, 'repcollapse.extract') "
        "or (ours(m, 'repcollapse.train') and m not in light)]; "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
