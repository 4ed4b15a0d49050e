"""What an analysis run keeps off the console: warnings that are expected and say nothing new."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def expected_warnings_dropped() -> Iterator[None]:
    """Drop scikit-learn's ConvergenceWarning while the run lasts: the probe's lbfgs stops at
    max_iter by design (metrics/separability.py). A warnings *filter* cannot do it with the
    threads scheduler: the filter list is one per process, and the probe's own
    ``catch_warnings`` block, or sklearn's ``Parallel`` (which empties the list with
    ``resetwarnings`` and refills it), replaces it while other threads fit - their warnings
    then passed (tests/test_convergence_quiet.py). ``warnings.showwarning``, which prints what
    the filters let through, is replaced here before any thread starts; every catch_warnings
    block inside the run saves and restores this replacement, and nothing resets it."""
    shown = warnings.showwarning

    def show(message: Any, category: type, *args: Any, **kw: Any) -> None:
        # by name: importing sklearn costs a second, and a run without probes needs none of it
        if category.__name__ == "ConvergenceWarning" and category.__module__.startswith("sklearn."):
            return
        shown(message, category, *args, **kw)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown
