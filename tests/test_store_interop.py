"""The store read by tools other than this package: a plain ``xr.open_zarr`` (consolidated
metadata), CF attributes, and readers that skip the consolidated snapshot."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from repcollapse.store_schema import StoreReader, open_store
from repcollapse.store_schema import labels as L
from repcollapse.store_schema import schema as S
from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store
from repcollapse.store_schema.writer import StoreWriter

GOLDEN_V1 = Path(__file__).parent / "golden" / "store_v1.zarr"
SPEC = SyntheticSpec(
    n_checkpoints=2, n_layers=2, n_tokens=40, n_features=4, vocab_size=12, topk=3, token_chunk=32
)


def _plain_open(path: Path) -> xr.Dataset:
    """What a user types, with every warning an error (xarray warns when it falls back from
    consolidated metadata)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return xr.open_zarr(str(path))


def test_plain_open_has_no_warning_and_lists_each_completed_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, SPEC, complete=[True, False])
    ds = _plain_open(path)
    assert ds.sizes["checkpoint"] == 2  # the raw view: the incomplete slot too
    assert ds["complete"].values.tolist() == [1, 0]
    # Completing the second checkpoint refreshes the snapshot a plain open reads.
    StoreWriter(path).mark_complete(1)
    ds = _plain_open(path)
    assert ds["complete"].values.tolist() == [1, 1]
    assert open_store(path).sizes["checkpoint"] == 2


def test_fresh_empty_store_opens_plainly(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, dataclasses.replace(SPEC, n_checkpoints=0))
    assert _plain_open(path).sizes["checkpoint"] == 0


def test_stale_snapshot_is_not_trusted(tmp_path: Path) -> None:
    """A writer killed after a reservation leaves the snapshot one slot behind: a plain open
    shows the old slots (consistent), this package's readers and non-consolidated opens see
    the store as it is."""
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, SPEC, complete=[True, True])
    g = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    for _, arr in g.arrays():
        if (arr.metadata.dimension_names or ("",))[0] == "checkpoint":
            arr.resize((3, *arr.shape[1:]))
    g["name"][2] = "C/01-extra"
    assert _plain_open(path).sizes["checkpoint"] == 2  # the snapshot, one step behind
    assert xr.open_zarr(str(path), consolidated=False).sizes["checkpoint"] == 3
    reader = StoreReader(path)
    assert list(reader.slots()) == ["base", "A/01-stage", "C/01-extra"]
    assert reader.status("C/01-extra") == "incomplete"
    assert open_store(path, include_incomplete=True).sizes["checkpoint"] == 3
    StoreWriter(path).repair()  # the next writer's repair refreshes the snapshot
    assert _plain_open(path).sizes["checkpoint"] == 3


def test_memory_store_is_consolidated() -> None:
    url = "memory://interop-consolidated"
    make_synthetic_store(url, SPEC)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(url)
    np.testing.assert_array_equal(ds["complete"].values, [1, 1])


@pytest.mark.parametrize("consolidated", [False, None])
def test_values_agree_with_or_without_the_snapshot(tmp_path: Path, consolidated: bool) -> None:
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, SPEC)
    plain = xr.open_zarr(str(path), consolidated=consolidated)
    ours = open_store(path)
    np.testing.assert_array_equal(plain["hidden"].values, ours["hidden"].values)


def test_every_array_carries_cf_attrs_from_its_spec(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, dataclasses.replace(SPEC, lora_modules=("q_proj",)))
    g = zarr.open_group(str(path), mode="r", use_consolidated=False)
    specs = {
        **S.TOKEN_COORDS,
        **S.CHECKPOINT_COORDS,
        **S.REQUIRED_VARIABLES,
        S.CHECKSUMS.name: S.CHECKSUMS,
        **{spec.name: spec for spec in S.lora_variable_specs("q_proj")},
        **{spec.name: spec for spec in map(L.form_spec, L.LABELS)},
    }
    names = sorted(name for name, _ in g.arrays())
    assert names == sorted(specs)
    for name in names:
        attrs, spec = dict(g[name].attrs), specs[name]
        assert attrs["long_name"] == attrs["description"] == spec.description, name
        if spec.dtype in ("str", "bool") or name.endswith(L.SUFFIX):  # text, even as bytes
            assert "units" not in attrs, name
        else:
            assert attrs["units"] == "1", name
    ds = xr.open_zarr(str(path))  # xarray hands them on
    assert ds["hidden"].attrs["units"] == "1" and ds["hidden"].attrs["long_name"]


@pytest.mark.parametrize("golden", [False, True], ids=["fresh", "golden_v1"])
def test_open_store_has_a_layer_coordinate(tmp_path: Path, golden: bool) -> None:
    if golden:
        path = tmp_path / "golden.zarr"
        shutil.copytree(GOLDEN_V1, path)
    else:
        path = tmp_path / "s.zarr"
        make_synthetic_store(path, SPEC)
    ds = open_store(path)
    n = ds.sizes["layer"]
    np.testing.assert_array_equal(ds["layer"].values, np.arange(n))
    assert "layer" in ds.indexes and ds["layer"].attrs["long_name"].startswith("layer")
    last = ds["hidden"].sel(layer=n - 1).values
    np.testing.assert_array_equal(last, ds["hidden"].isel(layer=-1).values)


# --- tensorstore (Google's independent Zarr v3 implementation) --------------------------------
TEXT_ARRAYS = sorted(
    name
    for name, spec in {
        **S.TOKEN_COORDS,
        **S.CHECKPOINT_COORDS,
        S.CHECKSUMS.name: S.CHECKSUMS,
    }.items()
    if spec.dtype == "str"
)
LABEL_ARRAYS = sorted(name for name in TEXT_ARRAYS if not name.endswith("_json"))


def _ts_read(path: Path, name: str) -> np.ndarray:
    ts = pytest.importorskip("tensorstore", reason="tensorstore not installed (dev extra)")
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / name)}}
    return ts.open(spec, read=True).result().read().result()


def test_tensorstore_reads_the_numbers(tmp_path: Path) -> None:
    """Every numeric array of a fresh store, read by tensorstore, is bitwise what xarray reads."""
    pytest.importorskip("tensorstore", reason="tensorstore not installed (dev extra)")
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, SPEC)
    ds = xr.open_zarr(str(path), consolidated=False)
    numeric = [k for k in ds.variables if ds[k].dtype.kind in "biuf"]
    assert {"hidden", "complete", "position", "stage_index", "topk_ids"} <= set(numeric)
    for name in numeric:
        np.testing.assert_array_equal(_ts_read(path, name), ds[name].values, err_msg=name)


def test_tensorstore_reads_the_labels(tmp_path: Path) -> None:
    """Every label of a store (issue 18): a non-Python reader finds each label's UTF-8 form by
    the ``label_of`` attribute in the arrays' own zarr.json, reads it with tensorstore, decodes
    it with nothing but those attributes, and gets exactly xarray's labels (non-ASCII included)."""
    pytest.importorskip("tensorstore", reason="tensorstore not installed (dev extra)")
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, SPEC, names=["base", "A/01-stagé"], mitigation="replay:général")
    StoreWriter(path).reserve(  # an incomplete slot's labels are there too
        {
            **{k: "" for k in S.CHECKPOINT_COORDS if S.CHECKPOINT_COORDS[k].dtype == "str"},
            **{k: 0 for k in S.CHECKPOINT_COORDS if S.CHECKPOINT_COORDS[k].dtype != "str"},
            "name": "C/01-ünfinished",
            "parent": "A/01-stagé",
        }
    )
    ds = xr.open_zarr(str(path), consolidated=False)
    found, decoded = {}, set()
    for meta in sorted(path.glob("*/zarr.json")):  # JSON only: what any language can read
        attrs = json.loads(meta.read_text()).get("attributes", {})
        if "label_of" in attrs:
            found[attrs["label_of"]] = (meta.parent.name, attrs)
    assert sorted(found) == LABEL_ARRAYS and len(LABEL_ARRAYS) == 10
    for label, (array, attrs) in found.items():
        rows = _ts_read(path, array)
        assert rows.dtype == np.uint8 and rows.ndim == 2, array
        pad = bytes([attrs["pad_byte"]])
        got = [bytes(r).rstrip(pad).decode(attrs["encoding"]) for r in rows]
        want = [str(x) for x in ds[label].values.ravel()]
        assert got == want, label
        decoded |= set(got)
    assert {"A/01-stagé", "C/01-ünfinished", "replay:général", "fit", "math"} <= decoded
    # The JSON documents are not labels: they stay text, with no byte form.
    assert {
        f"{k}{L.SUFFIX}" for k in ("manifest_json", "behavior_json", "checksums_json")
    }.isdisjoint(p.name for p in path.iterdir())


def test_open_store_hides_the_byte_forms(tmp_path: Path) -> None:
    """Analysis sees exactly the labelled view it saw before the byte forms existed."""
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, SPEC)
    for ds in (open_store(path, include_incomplete=True), StoreReader(path).dataset()):
        assert not [k for k in ds.variables if str(k).endswith(L.SUFFIX)]
        assert not [d for d in ds.dims if L.is_byte_dim(str(d))]
    plain = xr.open_zarr(str(path), consolidated=False)  # a plain open has them, beside the labels
    assert plain["name__utf8"].dims == ("checkpoint", "name__byte")
    assert [str(x) for x in plain["name"].values] == ["base", "A/01-stage"]
