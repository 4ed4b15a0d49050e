"""Conformance checks that a store written by ``StoreWriter`` and the ``StoreReader`` both pass.

The habit of zarr-python's ``StoreTests``: one class of checks, subclassed once per way a
store comes to exist (a golden store of each schema version, a freshly written one, a
generated-output sub-store), so the writer and the reader are held to one contract. A
subclass provides the ``store`` fixture: a ``(url, group)`` pair. Nothing here imports pytest:
the methods are plain ``test_*`` methods that pytest collects from a ``Test*`` subclass.

What is checked: ``validate_store`` finds no problem; the reader's attributes, slots, status,
checkpoint values, token coordinates and sizes agree with the xarray view of docs/store.md;
every ``hidden`` block read through ``BlockReader`` (checksums checked where recorded) is
bit-identical to the Dataset's values.
"""

from __future__ import annotations

import numpy as np

from repcollapse.store_schema import schema as S
from repcollapse.store_schema.reader import StoreReader
from repcollapse.store_schema.validate import validate_store

StoreRef = tuple[str, str | None]
"""(url, group) of the store under test."""


class StoreConformance:
    """Subclass as ``Test...`` with a ``store`` fixture returning a ``StoreRef``."""

    def test_validates(self, store: StoreRef) -> None:
        url, group = store
        if group is None:  # validate_store covers the generated groups from the root
            problems, summary = validate_store(url)
            # an unfinished checkpoint is a state readers handle (they skip it), not damage
            problems = [p for p in problems if p.kind != "incomplete_checkpoint"]
            assert problems == [], f"{summary}: {[str(p) for p in problems]}"

    def test_required_attrs(self, store: StoreRef) -> None:
        reader = StoreReader(*store)
        missing = [k for k in S.REQUIRED_ATTRS if k not in reader.attrs]
        assert missing == [], f"{reader.where}: attrs missing {missing}"
        assert reader.attrs["schema_version"] <= S.SCHEMA_VERSION
        assert reader.attrs["store_kind"] == S.STORE_KIND

    def test_slots_and_status(self, store: StoreRef) -> None:
        reader = StoreReader(*store)
        slots = reader.slots()
        assert sorted(slots.values()) == list(range(len(slots))), "slots are 0..n-1"
        mask = reader.complete_mask()
        assert len(mask) == len(slots)
        complete = reader.complete_checkpoints()
        assert complete == [n for n, i in slots.items() if mask[i]]
        for name in slots:
            assert reader.status(name) == ("complete" if name in complete else "incomplete")
        assert reader.status("no such checkpoint") == "absent"
        ds = reader.dataset()
        assert [str(x) for x in ds["checkpoint"].values] == complete

    def test_hidden_dtype(self, store: StoreRef) -> None:
        """``hidden`` reads in the dtype the store records (float16 where none is), or float32
        where its codec is int8-token (dequantised on read)."""
        reader = StoreReader(*store)
        recorded = S.hidden_dtype_of(reader.attrs)
        assert recorded in S.HIDDEN_DTYPES, f"{reader.where}: attrs.hidden_dtype {recorded!r}"
        decoded = reader.codec.decoded_dtype(recorded)
        assert reader.hidden_dtype == decoded, reader.where
        assert reader.dataset(include_incomplete=True)["hidden"].dtype == decoded

    def test_sizes(self, store: StoreRef) -> None:
        reader = StoreReader(*store)
        ds = reader.dataset(include_incomplete=True)
        assert reader.hidden_shape[1:] == (
            ds.sizes[S.LAYER],
            ds.sizes[S.TOKEN],
            ds.sizes[S.FEATURE],
        )
        assert ds["hidden"].data.chunks[2][0] == reader.token_chunk

    def test_checkpoint_values(self, store: StoreRef) -> None:
        reader = StoreReader(*store)
        ds = reader.dataset()
        keys = [k for k in S.CHECKPOINT_COORDS if k in ds] + list(S.BEHAVIOR)
        for name in reader.complete_checkpoints():
            got = reader.checkpoint_values(name, keys)
            row = ds.sel(checkpoint=name)
            for key in keys:
                want = row[key].values.item()
                if isinstance(want, float) and np.isnan(want):
                    assert np.isnan(got[key]), (name, key)
                else:
                    assert got[key] == want or str(got[key]) == str(want), (name, key)

    def test_token_coords(self, store: StoreRef) -> None:
        reader = StoreReader(*store)
        ds = reader.dataset()
        coords = reader.token_coords()
        assert set(coords) == set(S.TOKEN_COORDS)
        for key, values in coords.items():
            assert len(values) == reader.n_tokens, key
            np.testing.assert_array_equal(values, np.asarray(ds[key].values), err_msg=key)

    def test_hidden_blocks(self, store: StoreRef) -> None:
        """Every block through the checked reader equals the Dataset's values, bit for bit."""
        reader = StoreReader(*store)
        slots = reader.slots()
        blocks = reader.hidden_blocks(verify=slots)
        ds = reader.dataset()
        step = reader.token_chunk
        for name in reader.complete_checkpoints():
            want = np.asarray(ds["hidden"].sel(checkpoint=name).values)
            for layer in range(reader.n_layers):
                for t0 in range(0, reader.n_tokens, step):
                    t1 = min(t0 + step, reader.n_tokens)
                    got = blocks.read(slots[name], layer, t0, t1)
                    assert got.dtype == reader.hidden_dtype
                    np.testing.assert_array_equal(got, want[layer, t0:t1])
