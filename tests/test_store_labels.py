"""The labels' UTF-8 byte forms (store_schema.labels, docs/store.md "Labels for other Zarr
readers"): written with the labels, checked against them by validation, refused when too long,
absent (with a warning) in older stores. tensorstore reading them: tests/test_store_interop.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from repcollapse.cli.main import main
from repcollapse.store_schema import StoreWriter, open_store
from repcollapse.store_schema import labels as L
from repcollapse.store_schema import schema as S
from repcollapse.store_schema.store import StoreLayout, create_store
from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store
from repcollapse.store_schema.validate import validate_store

SPEC = SyntheticSpec(
    n_checkpoints=3, n_layers=2, n_tokens=40, n_features=4, vocab_size=12, topk=3, token_chunk=16
)
GOLDEN = Path(__file__).parent / "golden" / "store_v1.zarr"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "s.zarr"
    make_synthetic_store(path, SPEC)
    return path


@pytest.fixture
def store(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "s.zarr"
    shutil.copytree(pristine, copy)
    return copy


def _files(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def _decoded(g: zarr.Group, label: str) -> list[str]:
    return L.decode(np.asarray(g[L.form_name(label)][:]))


def test_every_label_has_its_form_and_they_agree(pristine: Path, capsys) -> None:
    g = zarr.open_group(str(pristine), mode="r")
    for label in L.LABELS:
        assert _decoded(g, label) == [str(x) for x in g[label][:]], label
    assert g["name__utf8"].shape == (3, L.CHECKPOINT_LABEL_BYTES)
    assert g["example__utf8"].shape[1] == max(len(str(x).encode()) for x in g["example"][:])
    assert main(["store", "validate", str(pristine)]) == 0
    assert "no UTF-8 byte forms" not in capsys.readouterr().err


def test_a_corrupted_checkpoint_row_is_reported(store: Path, capsys) -> None:
    g = zarr.open_group(str(store), mode="r+")
    g["name__utf8"][1] = L.encode(["A/01-stagf"], L.CHECKPOINT_LABEL_BYTES, "name")[0]
    problems, _ = validate_store(store)
    mismatch = [p for p in problems if p.kind == "label_mismatch"]
    assert [p.location for p in mismatch] == ["name__utf8[checkpoint='A/01-stage', slot 1]"]
    assert "expected the bytes of 'name' = 'A/01-stage', found 'A/01-stagf'" in mismatch[0].message
    # the row is a checksummed chunk of the slot as well
    assert any(p.kind == "checksum_mismatch" and "name__utf8" in p.location for p in problems)
    assert main(["store", "validate", str(store)]) == 1
    assert "name__utf8[checkpoint='A/01-stage', slot 1]" in capsys.readouterr().out
    assert [str(x) for x in open_store(store)["name"].values][1] == "A/01-stage"  # view: labels


def test_a_corrupted_token_row_is_reported(store: Path) -> None:
    g = zarr.open_group(str(store), mode="r+")
    rows = np.asarray(g["domain__utf8"][:])
    want = str(g["domain"][5])
    rows[5, 0] ^= 0x20  # one byte of token 5: 'math' -> 'Math'
    g["domain__utf8"][:] = rows
    problems = [p for p in validate_store(store)[0] if p.kind == "label_mismatch"]
    assert [p.location for p in problems] == ["domain__utf8[token=5]"]
    assert f"'domain' = {want!r}" in problems[0].message
    assert f"found {want[0].swapcase() + want[1:]!r}" in problems[0].message


def test_a_label_too_long_for_its_row_is_refused_before_any_write(store: Path) -> None:
    before = _files(store)
    w = StoreWriter(store)
    coords = {k: 0 if S.CHECKPOINT_COORDS[k].dtype != "str" else "" for k in S.CHECKPOINT_COORDS}
    long = "x" * 200 + "é" * 30  # 260 bytes in UTF-8, 230 characters
    with pytest.raises(
        ValueError,
        match=r"label 'mitigation' = 'x+.*: 260 bytes in UTF-8, longer than the 256-byte rows of mitigation__utf8",
    ):
        w.reserve({**coords, "name": "C/01-long", "mitigation": long})
    assert _files(store) == before  # no orphan, nothing consolidated
    assert validate_store(store)[0] == []


def test_a_token_label_with_a_nul_byte_is_refused_at_creation(tmp_path: Path) -> None:
    layout = StoreLayout(n_layers=1, n_features=2, n_tokens=2, vocab_size=3, topk=1)
    coords = {
        "example": np.array(["a\x00b", "c"]),
        "domain": np.array(["general"] * 2),
        "span": np.array(["prompt"] * 2),
        "position": np.arange(2, dtype=np.int32),
        "token_id": np.zeros(2, np.int32),
        "target_id": np.zeros(2, np.int32),
        "split": np.array(["fit"] * 2),
        "is_sink": np.zeros(2, bool),
    }
    attrs = {k: "x" for k in S.REQUIRED_ATTRS}
    with pytest.raises(Exception, match="token coord 'example'.*expected no NUL byte"):
        create_store(tmp_path / "s.zarr", layout, coords, attrs)
    assert not (tmp_path / "s.zarr").exists()


def test_a_twin_copy_has_its_own_labels(store: Path) -> None:
    w = StoreWriter(store)
    g = zarr.open_group(str(store), mode="r")
    coords = {k: g[k][1] for k in S.CHECKPOINT_COORDS}
    w.copy_checkpoint("A/01-stage", {**coords, "name": "twin/01-stage", "mitigation": "ewc"}, {})
    g = zarr.open_group(str(store), mode="r")
    assert _decoded(g, "name")[-1] == "twin/01-stage"
    assert _decoded(g, "mitigation")[-1] == "ewc"
    assert validate_store(store)[0] == []


def test_rewritten_coords_rewrite_their_rows(store: Path) -> None:
    """What ``extract --slots-from`` does to a reserved slot: every row but the name's."""
    w = StoreWriter(store)
    g = zarr.open_group(str(store), mode="r")
    coords = {k: g[k][2] for k in S.CHECKPOINT_COORDS}
    w.write_coords(2, {**coords, "name": "ignored", "stage_domain": "médical"})
    g = zarr.open_group(str(store), mode="r")
    assert _decoded(g, "stage_domain")[2] == "médical"
    assert _decoded(g, "name")[2] == "A/02-stage"
    assert not [p for p in validate_store(store)[0] if p.kind == "label_mismatch"]


def test_an_older_store_without_forms_stays_valid_and_gets_none(tmp_path: Path, capsys) -> None:
    old = tmp_path / "store_v1.zarr"
    shutil.copytree(GOLDEN, old)
    assert main(["store", "validate", str(old)]) == 0
    assert "no UTF-8 byte forms of the text labels" in capsys.readouterr().err
    w = StoreWriter(old)  # a writer appending to it writes no forms (it has no arrays for them)
    g = zarr.open_group(str(old), mode="r")
    coords = {k: g[k][0] for k in S.CHECKPOINT_COORDS if k in g}
    w.reserve({**coords, "name": "C/01-new"})
    g = zarr.open_group(str(old), mode="r")
    assert L.forms_in(g) == []
    kinds = {p.kind for p in validate_store(old)[0]}
    assert kinds == {"incomplete_checkpoint"}, kinds


def test_a_killed_remote_creation_with_byte_forms_is_recognised() -> None:
    """fsspec stores are built in place, attributes last: a group holding only store arrays,
    byte forms included, is a killed creation to rebuild, not someone's data."""
    from repcollapse.store_schema.protocol import looks_unfinished

    g = zarr.open_group("memory://labels-unfinished", mode="w", zarr_format=3)
    g.create_array("name", shape=(0,), chunks=(1,), dtype=str, dimension_names=("checkpoint",))
    spec = L.form_spec("name")
    g.create_array(spec.name, shape=(0, 256), dtype="uint8", dimension_names=spec.dims)
    assert looks_unfinished(g)
    g.create_array("other", shape=(2, 3), dtype="uint8", dimension_names=("token", "mine"))
    assert not looks_unfinished(g)
