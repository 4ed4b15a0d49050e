"""Typeable checkpoint names over the tables, for the notebook API and the SQL views.

Tables keep the names their store was written with (older stores: ``A[replay:general:0.10]@s0/
01-general``). Where a person reads or types them, ``checkpoint`` (and ``parent``) show the
current form (repcollapse.store_schema.naming) and ``checkpoint_label`` the stored one, so a
query may name a checkpoint either way. For tables written with typeable names both columns
are equal (the SQL views then add no ``checkpoint_label``: each is exactly its file).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from repcollapse.store_schema.naming import typeable_mapping

CHECKPOINT = "checkpoint"
LABEL = "checkpoint_label"
"""The column (and store coordinate) holding the stored name."""
NAME_COLUMNS: tuple[str, ...] = (CHECKPOINT, "parent")
"""Columns holding checkpoint names."""


def names_in(columns: Iterable[Iterable[Any]]) -> dict[str, str]:
    """{stored: typeable} over every name in ``columns`` (one mapping for all tables of a
    directory, so a checkpoint has one typeable name in each)."""
    return typeable_mapping(str(x) for col in columns for x in col if isinstance(x, str))


def typeable_frame(df: pd.DataFrame, mapping: dict[str, str]) -> pd.DataFrame:
    """``df`` with ``checkpoint``/``parent`` in typeable form and ``checkpoint_label`` (the
    stored name) right after ``checkpoint``; unchanged without a ``checkpoint`` column or when
    it already has ``checkpoint_label``."""
    if CHECKPOINT not in df.columns or LABEL in df.columns:
        return df
    out = df.copy()
    for col in NAME_COLUMNS:
        if col in out.columns:
            # a dict over the distinct values: Series.map of a dict is vectorised
            values = out[col]
            out[col] = values.map({x: mapping.get(x, x) for x in values.dropna().unique()})
    out.insert(out.columns.get_loc(CHECKPOINT) + 1, LABEL, df[CHECKPOINT].to_numpy())
    return out


def typeable_arrow(table: Any, mapping: dict[str, str]) -> Any:
    """``typeable_frame`` for a pyarrow Table (its other columns and types untouched)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = table.column_names
    if CHECKPOINT not in names or LABEL in names:
        return table
    stored = table.column(CHECKPOINT).cast(pa.string())
    for col in NAME_COLUMNS:
        if col in names:
            # rename the dictionary of distinct values, not every row (metrics tables are long)
            enc = pc.dictionary_encode(table.column(col).cast(pa.string())).combine_chunks()
            renamed = pa.array([mapping.get(x, x) for x in enc.dictionary.to_pylist()], pa.string())
            mapped = pa.DictionaryArray.from_arrays(enc.indices, renamed).cast(pa.string())
            table = table.set_column(names.index(col), col, mapped)
    return table.add_column(names.index(CHECKPOINT) + 1, LABEL, stored)


def arrow_names(tables: Iterable[Any]) -> dict[str, str]:
    """``names_in`` over the name columns of pyarrow Tables."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return names_in(
        pc.unique(t.column(col).cast(pa.string())).to_pylist()
        for t in tables
        for col in NAME_COLUMNS
        if col in t.column_names
    )
