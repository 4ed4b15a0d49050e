"""Every text label of a store, also as UTF-8 bytes in a ``uint8`` array: labels other Zarr readers
can decode (docs/store.md, "Labels for other Zarr readers").

zarr-python writes text as its vlen-utf8 ``string`` type, which other Zarr v3 implementations
(tensorstore among them) do not read: they get the numbers but not which checkpoint or domain
they belong to. So beside each label array ``X`` (token labels written once at creation,
checkpoint labels per slot at reservation) the store keeps ``X__utf8``: one row per element,
the label's UTF-8 bytes padded with NUL bytes to a fixed width (the array's last dim,
``X__byte``). A reader decodes a row with nothing but the array's own attributes
(``label_of``, ``encoding``, ``pad_byte``): strip the trailing pad bytes, decode as UTF-8.

Why bytes per row rather than integer codes and a label table: a checkpoint's row is its own
chunk, written in the reservation's coordinates step, so no shared table is read, modified and
rewritten (the step object stores make dangerous, and a killed reservation leaves an orphan row
that the usual repair cuts off). The text arrays stay the truth: ``open_store`` and
``StoreReader`` read them and drop these forms from their view; validation checks the two agree.
The JSON documents (``manifest_json``, ``behavior_json``, ``checksums_json``) are not labels and
have no byte form.

Stores written before these arrays existed have none: they stay valid (a warning), and a writer
appending to one writes none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import zarr

from repcollapse.store_schema import schema as S
from repcollapse.store_schema.problems import Problem

SUFFIX = "__utf8"
BYTE_DIM_SUFFIX = "__byte"
ENCODING = "utf-8"
PAD_BYTE = 0
CHECKPOINT_LABEL_BYTES = 256
"""Width of a checkpoint label's row: a longer name, parent, mitigation... is refused at
reservation (checkpoint names are ~30 bytes; a width is fixed when the array is created)."""

TOKEN_LABELS: tuple[str, ...] = tuple(k for k, s in S.TOKEN_COORDS.items() if s.dtype == "str")
CHECKPOINT_LABELS: tuple[str, ...] = tuple(
    k for k, s in S.CHECKPOINT_COORDS.items() if s.dtype == "str" and not k.endswith("_json")
)
LABELS: tuple[str, ...] = (*TOKEN_LABELS, *CHECKPOINT_LABELS)
"""example, domain, span, split; name, sequence, stage_kind, stage_domain, parent, mitigation."""


class LabelTooLong(ValueError):
    """A label that does not fit its byte form's width (or holds a NUL byte)."""


def form_name(label: str) -> str:
    """``example`` -> ``example__utf8``."""
    return f"{label}{SUFFIX}"


def byte_dim(label: str) -> str:
    return f"{label}{BYTE_DIM_SUFFIX}"


def is_byte_dim(dim: str) -> bool:
    return any(dim == byte_dim(label) for label in LABELS)


def form_spec(label: str) -> S.VariableSpec:
    base = S.TOKEN if label in TOKEN_LABELS else S.CHECKPOINT
    return S.VariableSpec(
        form_name(label),
        (base, byte_dim(label)),
        "uint8",
        f"'{label}' as UTF-8 bytes, one row per {base}, padded with NUL (0) bytes to the row "
        "width: the label for Zarr readers without a text type",
    )


def form_attrs(label: str) -> dict[str, Any]:
    """The attributes a reader decodes a row with (and CF's long_name; bytes of text carry no
    units)."""
    attrs: dict[str, Any] = dict(S.cf_attrs(form_spec(label)))
    attrs.pop("units", None)
    return {**attrs, "label_of": label, "encoding": ENCODING, "pad_byte": PAD_BYTE}


def _utf8(value: Any, label: str) -> bytes:
    data = str(value).encode(ENCODING)
    if b"\x00" in data:
        raise LabelTooLong(
            f"label '{label}' = {str(value)[:80]!r}: expected no NUL byte, found one"
        )
    return data


def _strings(values: Iterable[Any]) -> np.ndarray:
    """As Python strings in an object array: numpy's fixed-width ``<U`` drops trailing NULs."""
    flat = np.asarray(values, dtype=object).ravel() if isinstance(values, np.ndarray) else values
    return np.array([str(x) for x in flat], dtype=object)


def encode(values: Iterable[Any], width: int, label: str) -> np.ndarray:
    """(n, width) uint8 rows of ``values``; LabelTooLong naming the label, its length and the
    width when one does not fit."""
    vals = _strings(values)
    uniq, inverse = np.unique(vals, return_inverse=True)
    table = np.zeros((len(uniq), width), np.uint8)
    for i, value in enumerate(uniq):
        data = _utf8(value, label)
        if len(data) > width:
            raise LabelTooLong(
                f"label '{label}' = {str(value)[:80]!r}: {len(data)} bytes in UTF-8, longer than "
                f"the {width}-byte rows of {form_name(label)}; use a shorter one"
            )
        table[i, : len(data)] = np.frombuffer(data, np.uint8)
    return table[inverse.ravel()] if len(vals) else np.zeros((0, width), np.uint8)


def decode(rows: np.ndarray) -> list[str]:
    """The labels of (n, width) rows (undecodable bytes shown as U+FFFD)."""
    rows = np.asarray(rows, np.uint8)
    return [bytes(r).rstrip(b"\x00").decode(ENCODING, errors="replace") for r in rows]


def token_width(values: Iterable[Any]) -> int:
    """Row width of a token label: its longest value in UTF-8 bytes (at least 1)."""
    uniq = np.unique(_strings(values))
    return max([1, *(len(str(v).encode(ENCODING)) for v in uniq)])


def label_problems(token_coords: Mapping[str, Any]) -> list[Problem]:
    """Token labels that cannot have a byte form (a NUL byte): refused at creation."""
    problems = []
    for label in TOKEN_LABELS:
        if label in token_coords:
            try:
                encode(token_coords[label], token_width(token_coords[label]), label)
            except LabelTooLong as e:
                problems.append(Problem(f"token coord '{label}'", str(e), "bad_value"))
    return problems


def _create(g: zarr.Group, label: str, shape: tuple[int, int], chunks: tuple[int, int]) -> Any:
    spec = form_spec(label)
    arr = g.create_array(
        spec.name,
        shape=shape,
        chunks=chunks,
        dtype="uint8",
        dimension_names=spec.dims,
        fill_value=PAD_BYTE,
    )
    arr.attrs.update(form_attrs(label))
    return arr


def create_forms(g: zarr.Group, token_coords: Mapping[str, Any]) -> None:
    """At creation: the token labels' forms, written, and empty checkpoint labels' forms."""
    for label in TOKEN_LABELS:
        values = np.asarray(token_coords[label])
        width = token_width(values)
        arr = _create(g, label, (len(values), width), (len(values), width))
        arr[:] = encode(values, width, label)
    for label in CHECKPOINT_LABELS:
        _create(g, label, (0, CHECKPOINT_LABEL_BYTES), (1, CHECKPOINT_LABEL_BYTES))


def forms_in(g: zarr.Group) -> list[str]:
    """Names of the byte forms the group holds (none in stores written before them)."""
    return [form_name(label) for label in LABELS if form_name(label) in g]


def checkpoint_rows(g: zarr.Group, coords: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Form name -> the row of one slot, for the checkpoint labels in ``coords`` whose form the
    store holds. Raises LabelTooLong before anything is written."""
    rows = {}
    for label in CHECKPOINT_LABELS:
        name = form_name(label)
        if label in coords and name in g:
            rows[name] = encode([coords[label]], int(g[name].shape[1]), label)[0]
    return rows


def write_rows(g: zarr.Group, index: int, rows: Mapping[str, np.ndarray]) -> None:
    for name, row in rows.items():
        g[name][index] = row


def agreement_problems(g: zarr.Group, n_slots: int, names: list[str]) -> list[Problem]:
    """Every byte form that does not decode to its label: for token labels the first token and
    the count, for checkpoint labels each committed slot, naming the array and the slot."""
    problems: list[Problem] = []
    for label in LABELS:
        name = form_name(label)
        if name not in g or label not in g:
            continue
        arr = g[name]
        token = label in TOKEN_LABELS
        n = int(g[label].shape[0]) if token else n_slots
        if arr.ndim != 2 or arr.shape[0] < n:
            continue  # validation's shape checks report it
        stored = np.asarray(arr[:n])
        values = list(_strings(np.asarray(g[label][:n])))
        try:
            want = encode(values, stored.shape[1], label)
            bad = np.flatnonzero((stored != want).any(axis=1))
        except LabelTooLong as e:
            problems.append(
                Problem(name, f"expected rows holding '{label}', but {e}", "label_mismatch")
            )
            continue
        if not len(bad):
            continue
        if token:
            i = int(bad[0])
            extra = f" ({len(bad)} token(s) differ)" if len(bad) > 1 else ""
            found = decode(stored[i : i + 1])[0]
            problems.append(
                Problem(
                    f"{name}[token={i}]",
                    f"expected the bytes of '{label}' = {values[i]!r}, found {found!r}{extra}",
                    "label_mismatch",
                )
            )
            continue
        for j in (int(x) for x in bad):
            slot = names[j] if j < len(names) else str(j)
            problems.append(
                Problem(
                    f"{name}[checkpoint={slot!r}, slot {j}]",
                    f"expected the bytes of '{label}' = {values[j]!r}, found "
                    f"{decode(stored[j : j + 1])[0]!r}",
                    "label_mismatch",
                )
            )
    return problems


def missing_forms_warning(g: zarr.Group, where: str) -> list[Problem]:
    """A store written before the byte forms: valid, and told."""
    if forms_in(g):
        return []
    return [
        Problem(
            where,
            "no UTF-8 byte forms of the text labels (X__utf8; written before they existed): other "
            "Zarr readers (tensorstore) get its numbers, not its labels",
            "no_label_bytes",
        )
    ]
