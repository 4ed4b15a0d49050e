"""The array namespace: NumPy, or CuPy when CuPy and a GPU are present. One code path for both.

Metric code never imports numpy or cupy for array work on the data path; it asks
:func:`namespace` for the module that owns its arrays (refusing mixtures, like xarray's
``array_api_compat``), and :func:`backend` picks the module for a run. On a machine without
CuPy or without a device, ``backend('auto')`` is NumPy and nothing CuPy-related is imported
beyond a failed ``import cupy``; the NumPy path is the one the test suite exercises.

Blocks arrive from zarr as NumPy arrays on every backend (zarr reads to host memory); the
accumulator moves each block to the device with ``xp.asarray`` (a no-op for NumPy). Small
dense linear algebra after the pass (eigenvalues of d x d matrices, sklearn probes) runs on the
host: :func:`to_numpy` brings accumulators back.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy as np

BACKENDS: tuple[str, ...] = ("auto", "numpy", "cupy")


@functools.cache
def _cupy() -> ModuleType | None:
    """CuPy if it imports and sees at least one device, else None (never raises)."""
    try:
        import cupy  # type: ignore[import-not-found]

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:  # ImportError, CUDA driver errors: no usable GPU
        return None
    return cupy


def cupy_available() -> bool:
    return _cupy() is not None


def backend(name: str = "auto") -> ModuleType:
    """The array module for a run: 'numpy', 'cupy' (error if unusable) or 'auto'."""
    if name not in BACKENDS:
        raise ValueError(f"array backend {name!r} is not one of {list(BACKENDS)}")
    if name == "numpy":
        return np
    cp = _cupy()
    if name == "cupy" and cp is None:
        raise RuntimeError("array backend 'cupy' requested, but CuPy or a CUDA device is missing")
    return cp if cp is not None else np


def by_name(name: str) -> ModuleType:
    """Module from its name (accumulators store the name: modules do not pickle)."""
    if name == "numpy":
        return np
    if name == "cupy":
        return backend("cupy")
    raise ValueError(f"array module {name!r} is not one of ['numpy', 'cupy']")


def namespace(*arrays: Any) -> ModuleType:
    """The module owning ``arrays`` (non-arrays ignored); refuses a NumPy/CuPy mixture."""
    kinds = set()
    for a in arrays:
        mod = type(a).__module__.split(".")[0]
        if mod == "cupy":
            kinds.add("cupy")
        elif isinstance(a, np.ndarray | np.generic):
            kinds.add("numpy")
    if len(kinds) > 1:
        types = sorted({type(a).__module__ + "." + type(a).__name__ for a in arrays})
        raise TypeError(f"mixed array types {types}: expected all NumPy or all CuPy arrays")
    return by_name(kinds.pop()) if kinds else np


def to_numpy(a: Any) -> np.ndarray:
    """Host copy of a NumPy or CuPy array (NumPy arrays are returned as they are)."""
    if type(a).__module__.split(".")[0] == "cupy":
        return a.get()
    return np.asarray(a)
