"""The store conformance suite (store_schema.conformance) over every golden store and freshly
written ones, plus the reader's refusals: a damaged block, a newer schema, an unknown name."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from repcollapse.store_schema import SchemaError, StoreReader
from repcollapse.store_schema.conformance import StoreConformance, StoreRef
from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store

GOLDEN = sorted((Path(__file__).parent / "golden").glob("store_v*.zarr"))
SPEC = SyntheticSpec(
    n_checkpoints=3, n_layers=3, n_tokens=120, n_features=8, vocab_size=20, topk=3, token_chunk=64
)


@pytest.mark.parametrize("golden", GOLDEN, ids=lambda p: p.name)
class TestGoldenStore(StoreConformance):
    """Every schema version's golden store still reads through today's reader."""

    @pytest.fixture
    def store(self, golden: Path, tmp_path: Path) -> StoreRef:
        copy = tmp_path / golden.name  # the reader never writes, but a test must not risk it
        shutil.copytree(golden, copy)
        return str(copy), None


class TestFreshStore(StoreConformance):
    """A store the writer produced now: checksums recorded, one checkpoint left incomplete."""

    @pytest.fixture(scope="class")
    def store(self, tmp_path_factory: pytest.TempPathFactory) -> StoreRef:
        path = tmp_path_factory.mktemp("fresh") / "s.zarr"
        make_synthetic_store(path, SPEC, complete=[True, False, True])
        return str(path), None


class TestFreshMemoryStore(StoreConformance):
    """The same through an fsspec URL (no local path)."""

    @pytest.fixture(scope="class")
    def store(self) -> StoreRef:
        make_synthetic_store("memory://conformance", SPEC)
        return "memory://conformance", None


def test_golden_stores_exist() -> None:
    assert GOLDEN, "tests/golden holds no store_v*.zarr: the golden suite would run on nothing"


def test_fresh_store_has_an_incomplete_slot(tmp_path: Path) -> None:
    make_synthetic_store(tmp_path / "s.zarr", SPEC, complete=[True, False, True])
    reader = StoreReader(tmp_path / "s.zarr")
    assert reader.complete_checkpoints() == ["base", "A/02-stage"]
    assert reader.status("A/01-stage") == "incomplete"
    assert reader.slots() == {"base": 0, "A/01-stage": 1, "A/02-stage": 2}


def test_damaged_block_is_refused_naming_checkpoint_and_chunk(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, SPEC)
    hidden = zarr.open_group(str(path), mode="r+")["hidden"]
    hidden[1, 2, 64:120, :] = hidden[1, 2, 64:120, :] + np.float16(1)  # bit rot in one chunk
    reader = StoreReader(path)
    slots = reader.slots()
    checked = reader.hidden_blocks(verify=slots)
    checked.read(1, 2, 0, 64)  # the chunk beside it is intact
    with pytest.raises(SchemaError) as err:
        checked.read(1, 2, 64, 120)
    assert "'A/01-stage'" in str(err.value.problems[0]) and "2.1.0" in str(err.value.problems[0])
    reader.hidden_blocks().read(1, 2, 64, 120)  # unchecked reader: no verification asked


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, SPEC)
    g = zarr.open_group(str(path), mode="r+")
    g.attrs["schema_version"] = 999
    with pytest.raises(SchemaError, match="999"):
        StoreReader(path)


def test_unknown_names_are_errors_naming_them(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    make_synthetic_store(path, SPEC)
    reader = StoreReader(path)
    with pytest.raises(KeyError, match="nope"):
        reader.checkpoint_values("nope", ["lora_rank"])
    with pytest.raises(KeyError, match="not a token coordinate"):
        reader.token_coords(["hidden"])
    assert reader.checkpoint_values("A/01-stage", ["lora_rank", "lora_scaling", "name"]) == {
        "lora_rank": SPEC.lora_rank,
        "lora_scaling": 2.0,
        "name": "A/01-stage",
    }
    assert reader.generated_groups() == {}
