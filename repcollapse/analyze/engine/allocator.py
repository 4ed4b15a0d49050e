"""glibc malloc settings for an analysis process: fewer page faults, the same numbers.

A pass allocates and frees arrays of a few to ~20 MB for every token chunk (decoded blocks,
gathered float64 rows, d x d products). By default glibc serves those from fresh ``mmap`` pages
and unmaps them on free; its dynamic threshold then moves blocks up to the largest freed one
onto the heap, but trims the heap back whenever more than twice that lies free at its top (and
each thread's arena trims its own). Either way each chunk pays the page faults of touching
returned memory again. Measured on the bench stores (4 checkpoints x 8 layers x 576 features,
2 cores, threaded dask): the full sweep spent 7.7 of its 45 CPU seconds in the kernel at 20,000
tokens and 12.4 of 159 at 160,000; with the settings below, 1.2 and 4.4, and the wall time fell
from 24.9 to 21.9 s and from 86.0 to 83.7 s; the peak RSS rose by up to ~90 MB (1,199 to
1,285 MiB at 20,000 tokens: freed blocks are kept for reuse). The arithmetic is untouched: the
tables are bitwise the same.

The settings (``mallopt``): grow the heap 512 MiB at a time (``M_TOP_PAD``), serve blocks up
to 32 MiB from the heap rather than ``mmap`` (``M_MMAP_THRESHOLD``; a chunk's largest array is
~18 MB) and keep up to 1 GiB of freed memory (``M_TRIM_THRESHOLD``); ``malloc_trim`` hands it
back at the end. They hold for the whole process, and glibc has no getter to restore earlier
values, so only the ``repcollapse analyze metrics`` command sets them (the demo and the study
run it as a process of its own); a library caller opts in with :func:`tuned`. Without glibc
(macOS, musl) nothing happens.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Iterator

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
"""glibc's mallopt parameter numbers (malloc.h)."""
SETTINGS: tuple[tuple[str, int, int], ...] = (
    ("M_TOP_PAD", M_TOP_PAD, 512 << 20),
    ("M_MMAP_THRESHOLD", M_MMAP_THRESHOLD, 32 << 20),
    ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, 1 << 30),
)


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl and macOS lack it)
        libc.mallopt  # noqa: B018
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def tune() -> list[str]:
    """Apply ``SETTINGS``; the names glibc accepted (empty where there is no glibc)."""
    libc = _glibc()
    if libc is None:
        return []
    return [name for name, param, value in SETTINGS if libc.mallopt(param, value) == 1]


def trim() -> bool:
    """Return freed heap memory to the system (False without glibc or when nothing was freed)."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))


@contextlib.contextmanager
def tuned() -> Iterator[list[str]]:
    """``tune()`` for the block, ``trim()`` after it (the settings themselves stay)."""
    try:
        yield tune()
    finally:
        trim()
