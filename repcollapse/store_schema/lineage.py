"""How a checkpoint's lineage labels are read: the one definition of a no-op and a control.

Training writes a chain's mitigations as one label, its parts joined by '+' (for example
``replay:general:0.10+noop``; ``none`` when there is none). A no-op chain is one trained at
learning rate 0, whatever its sequence: the shipped control is sequence 'A' with mitigation
'noop'. Its checkpoints equal their parents, so they belong in the falsification check and in no
table about real stages.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

NO_MITIGATION = "none"
NOOP_MITIGATION = "noop"
CONTROL_SEQUENCE = "control"
"""The matched-token general-SFT chain that stage effects are measured against."""


def mitigation_parts(label: str) -> tuple[str, ...]:
    """The parts of a mitigation label; () for 'none' or ''."""
    if label in ("", NO_MITIGATION):
        return ()
    return tuple(label.split("+"))


def is_noop(mitigation: str) -> bool:
    """True for a chain trained at learning rate 0 (its label has the part 'noop')."""
    return NOOP_MITIGATION in mitigation_parts(str(mitigation))


def noop_mask(mitigations: Iterable[str]) -> np.ndarray:
    """``is_noop`` over a column of mitigation labels (a list, array or pandas Series)."""
    return np.fromiter((is_noop(m) for m in mitigations), dtype=bool)
