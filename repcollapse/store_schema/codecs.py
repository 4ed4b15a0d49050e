"""Codecs of the ``hidden`` array: lossless (the default), ``bitround:K`` and ``int8-token``.

A store's codec is chosen when it is created (``extract --codec``), recorded in the root
attribute ``hidden_codec`` and in ``hidden``'s own attribute of the same name, and shared by
every checkpoint of the store. Stores written before codecs existed record none: lossless.

- ``lossless``: ``hidden`` holds the values in the store's ``hidden_dtype``, uncompressed (hidden
  states compress ~1.08x losslessly: not worth the CPU).
- ``bitround:K``: every value keeps K of its mantissa bits (round to nearest, ties to even:
  numcodecs' ``BitRound``), then the chunks are byte-shuffled and zstd-compressed (Blosc, a
  codec of the Zarr v3 specification). The writer rounds before writing, so the checksums
  recorded at extraction are of the values readers get back, and ``store validate`` checks that
  no dropped bit is set. Relative error per value <= 2^-(K+1) (float16 subnormals: absolute
  <= 2^-(K+15)). numcodecs' BitRound is not in ``hidden``'s codec pipeline: its decode is the
  identity, and as ``numcodecs.bitround`` it is outside the Zarr v3 specification (other Zarr
  implementations could not open the array; zarr-python warns so on every open).
- ``int8-token``: ``hidden`` is int8 and a float32 array ``hidden_scale`` (checkpoint, layer,
  token) is stored beside it; ``value = hidden * hidden_scale`` (scale = max |h| over the
  token's features / 127, values rounded to nearest). Readable by anyone with the formula;
  ``StoreReader``, its block reader and ``open_store`` dequantise on read, so every reader of
  this package sees float32. Absolute error per value <= scale / 2.

Readers meeting a codec name they do not know refuse the store (``codec_of``) rather than
misreading integers as activations.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import zarr
from numcodecs import BitRound as _BitRoundNumpy

from repcollapse.store_schema import schema as S
from repcollapse.store_schema.problems import Problem, SchemaError

CODEC_ATTR = "hidden_codec"
"""Root attribute (and attribute of ``hidden``) recording the store's codec name."""
DEFAULT_CODEC = "lossless"
BITROUND_BITS = (1, 10)
"""Mantissa bits a ``bitround:K`` store may keep (float16 has 10)."""
CODEC_NAMES = ("lossless", f"bitround:K (K {BITROUND_BITS[0]}..{BITROUND_BITS[1]})", "int8-token")
"""For messages: the codec names this code reads and writes."""

SCALE = S.VariableSpec(
    "hidden_scale",
    (S.CHECKPOINT, S.LAYER, S.TOKEN),
    "float32",
    "int8-token codec: per-(checkpoint, layer, token) scale, max |h| over features / 127; "
    "hidden value = hidden (int8) * hidden_scale",
)
"""Present only in ``int8-token`` stores."""
DEQUANTISATION = "hidden[c, l, t, f] * hidden_scale[c, l, t]"

_PATTERN = re.compile(r"^(lossless|int8-token|bitround:(\d+))$")


@dataclass(frozen=True)
class HiddenCodec:
    """One codec of ``hidden``; ``keepbits`` only for bitround."""

    kind: Literal["lossless", "bitround", "int8-token"]
    keepbits: int | None = None

    @property
    def name(self) -> str:
        return f"bitround:{self.keepbits}" if self.kind == "bitround" else self.kind

    @property
    def lossy(self) -> bool:
        return self.kind != "lossless"

    @property
    def quantised(self) -> bool:
        """int8 values plus a scale array (what readers dequantise)."""
        return self.kind == "int8-token"

    def stored_dtype(self, hidden_dtype: str) -> str:
        """dtype of the ``hidden`` array itself."""
        return "int8" if self.quantised else hidden_dtype

    def decoded_dtype(self, hidden_dtype: str) -> np.dtype:
        """dtype readers of this package get: the store's, float32 for int8-token."""
        return np.dtype(np.float32 if self.quantised else hidden_dtype)

    def hidden_spec(self, hidden_dtype: str) -> S.VariableSpec:
        spec = S.hidden_spec(hidden_dtype)
        if not self.lossy:
            return spec
        extra = (
            f"; int8, value = {DEQUANTISATION}"
            if self.quantised
            else f"; mantissa rounded to {self.keepbits} bits"
        )
        return replace(
            spec, dtype=self.stored_dtype(hidden_dtype), description=spec.description + extra
        )

    def zarr_kwargs(self, hidden_dtype: str) -> dict[str, Any]:
        """``filters`` and ``compressors`` of ``hidden`` (``create_array`` keywords)."""
        from zarr.codecs import BloscCodec

        if self.kind == "lossless":
            return {"compressors": None}
        # Shuffle groups each byte position of the values: the dropped low mantissa bits become
        # runs of zeros. int8 codes are one byte: nothing to shuffle (bit-shuffling them
        # compresses worse). zstd level 7: ~10% smaller than 5 at ~80 MB/s of CPU per core on
        # bitround chunks; 9 is another ~5% at ~7 MB/s, slower than extraction (bench_codecs).
        itemsize = np.dtype(self.stored_dtype(hidden_dtype)).itemsize
        shuffle = "noshuffle" if self.quantised else "shuffle"
        blosc = BloscCodec(typesize=itemsize, cname="zstd", clevel=7, shuffle=shuffle)
        return {"compressors": [blosc]}


def parse_codec(value: Any, where: str = "codec") -> HiddenCodec:
    """The codec named ``value``, else ValueError naming ``where``, the names known and ``value``."""
    m = _PATTERN.match(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"{where}: expected one of {list(CODEC_NAMES)}, found {value!r}")
    if m.group(2) is None:
        return HiddenCodec(m.group(1))  # type: ignore[arg-type]
    k = int(m.group(2))
    lo, hi = BITROUND_BITS
    if not lo <= k <= hi:
        raise ValueError(f"{where}: expected bitround:K with K in {lo}..{hi}, found {value!r}")
    return HiddenCodec("bitround", k)


def codec_of(attrs: Mapping[str, Any], where: str = "store") -> HiddenCodec:
    """The codec a store's attributes record (lossless where none is); SchemaError if unknown."""
    value = attrs.get(CODEC_ATTR, DEFAULT_CODEC)
    try:
        return parse_codec(value, f"attrs.{CODEC_ATTR}")
    except ValueError as e:
        problem = Problem(
            f"attrs.{CODEC_ATTR}",
            f"expected one of {list(CODEC_NAMES)}, found {value!r} (a codec this version of "
            "repcollapse does not know: upgrade it)",
            "unknown_codec",
        )
        raise SchemaError([problem], f"cannot read {where}") from e


def logical_dtype(g: zarr.Group, codec: HiddenCodec) -> str:
    """The store's hidden dtype before encoding (what extraction range-checks against): the
    ``hidden`` array's own, or ``attrs.hidden_dtype`` where the array holds int8."""
    if codec.quantised:
        return S.hidden_dtype_of(dict(g.attrs))
    return np.dtype(g[S.HIDDEN.name].dtype).name


# --- the transforms ------------------------------------------------------------------------
def bitround(values: np.ndarray, keepbits: int) -> np.ndarray:
    """``values`` with ``keepbits`` mantissa bits (numcodecs' BitRound: what the codec applies).

    Raises ValueError where rounding up carries a finite value past the dtype's largest
    (float16: |h| above ~65,000 with few bits kept), rather than storing inf."""
    values = np.ascontiguousarray(values)
    out = np.asarray(_BitRoundNumpy(keepbits).encode(values)).view(values.dtype)
    overflow = np.isfinite(values) & ~np.isfinite(out)
    if overflow.any():
        worst = float(np.abs(values[overflow]).max())
        raise ValueError(
            f"bitround:{keepbits}: |h| {worst:.6g} rounds past the largest {values.dtype.name} "
            f"({float(np.finfo(values.dtype).max):.6g}); keep more bits or use --hidden-dtype float32"
        )
    return out.reshape(values.shape)


def quantise_int8(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values, float32 scale) of ``values`` (..., feature): one scale per row, max |h| /
    127, so every row's largest value maps to +-127. Rows of zeros get scale 0."""
    x = np.asarray(values, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("int8-token: expected finite hidden states, found NaN/inf")
    scale = (np.abs(x).max(axis=-1) / 127.0).astype(np.float32)
    # Divide by the float32 scale actually stored, so |x - q * scale| <= scale / 2 holds for it.
    s = scale.astype(np.float64)[..., None]
    q = np.rint(np.divide(x, s, out=np.zeros_like(x), where=s > 0))
    return np.clip(q, -127, 127).astype(np.int8), scale


def dequantise_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float32 values of int8 ``q`` (..., feature) with ``scale`` (...)."""
    return np.asarray(q, dtype=np.float32) * np.asarray(scale, dtype=np.float32)[..., None]


# --- validation ----------------------------------------------------------------------------
def codec_problems(g: zarr.Group) -> list[Problem]:
    """The store's codec against ``hidden``'s metadata (what ``store validate`` reports)."""
    try:
        codec = codec_of(dict(g.attrs))
    except SchemaError as e:
        return e.problems
    if S.HIDDEN.name not in g:
        return []  # validate reports the missing variable
    hidden = g[S.HIDDEN.name]
    problems: list[Problem] = []
    recorded = hidden.attrs.get(CODEC_ATTR)
    # Stores written before codecs record none: lossless.
    if recorded != codec.name and not (recorded is None and codec.kind == "lossless"):
        problems.append(
            Problem(
                f"{S.HIDDEN.name}: attrs.{CODEC_ATTR}",
                f"expected {codec.name!r} (the store's attrs.{CODEC_ATTR}), found {recorded!r}",
                "codec_mismatch",
            )
        )
    if not codec.quantised and SCALE.name in g:
        problems.append(
            Problem(
                SCALE.name,
                f"expected no {SCALE.name} (codec {codec.name!r}), found one",
                "codec_mismatch",
            )
        )
    return problems


def dropped_bits_set(values: np.ndarray, keepbits: int) -> int:
    """How many values have a mantissa bit set beyond the first ``keepbits`` (0 in a
    bitround:K store: what ``store validate`` checks when it scans values)."""
    values = np.ascontiguousarray(values)
    if values.dtype.kind != "f":
        return 0
    width = np.finfo(values.dtype).nmant - keepbits
    as_int = values.view(np.dtype(f"u{values.dtype.itemsize}"))
    mask = np.array((1 << width) - 1, dtype=as_int.dtype)
    return int(np.count_nonzero(as_int & mask))
