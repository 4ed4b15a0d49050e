"""Opening a store with xarray while a writer may be mid-reservation, or was killed in one.

xarray refuses a dataset whose arrays disagree on a dimension ("conflicting sizes for dimension
'checkpoint'"), and a reservation resizes the checkpoint arrays one by one: between two resizes,
and forever after a kill there until the next writer repairs it, they disagree. So the arrays
are opened in groups of equal length, each group cut to the committed slots
(``protocol.committed_slots``), and merged. A writer may resize between our reading the lengths
and xarray reading them: that shows as the same error, and the open is retried.
"""

from __future__ import annotations

import time
from pathlib import Path

import xarray as xr
import zarr

from repcollapse.store_schema import schema as S
from repcollapse.store_schema.labels import forms_in
from repcollapse.store_schema.protocol import array_name, checkpoint_arrays, committed_slots

_ATTEMPTS = 100
_PAUSE_S = 0.02
"""A reservation takes well under a second (a few dozen metadata writes): 2 s of retries."""


def _open_once(url: str | Path, group: str | None) -> xr.Dataset:
    root = zarr.open_group(store=str(url), mode="r", zarr_format=3, use_consolidated=False)
    g = root[group] if group else root
    arrays = checkpoint_arrays(g)
    n = committed_slots(g, arrays)
    lengths = {array_name(arr): arr.shape[0] for arr in arrays}
    # Coordinates are declared on `hidden` (a CF attribute): a part without it must be told.
    declared = str(g["hidden"].attrs.get("coordinates", "")).split() if "hidden" in g else []
    # The labels' UTF-8 forms are for other Zarr readers: this view has the labels themselves.
    hidden = forms_in(g)

    def open_(drop: list[str]) -> xr.Dataset:
        ds = xr.open_zarr(
            str(url), group=group, consolidated=False, zarr_format=3, drop_variables=drop + hidden
        )
        ds = ds.set_coords([k for k in declared if k in ds.data_vars])
        return ds.isel({S.CHECKPOINT: slice(0, n)})

    if len(set(lengths.values())) <= 1:
        return open_([])
    parts = [
        open_([k for k, other in lengths.items() if other != length])
        for length in sorted(set(lengths.values()))
    ]
    return xr.merge(parts, compat="override", join="exact", combine_attrs="override")


def open_committed(url: str | Path, group: str | None) -> xr.Dataset:
    """The store as a lazy Dataset of its committed slots (complete or not)."""
    for attempt in range(_ATTEMPTS):
        try:
            return _open_once(url, group)
        except ValueError as e:
            if "conflicting sizes" not in str(e) or attempt == _ATTEMPTS - 1:
                raise
            time.sleep(_PAUSE_S)
    raise AssertionError("unreachable")
