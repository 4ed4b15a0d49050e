"""Problems found by validators: every validator returns all of them, never the first only.

The shape follows zarr's metadata package: ``validate_*`` returns a list of :class:`Problem`,
``parse_*`` raises one :class:`SchemaError` carrying every problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store, record or manifest."""

    location: str
    """Where: a variable name, ``attrs.<key>``, ``line 12 field 'domain'``..."""
    message: str
    """What was expected and what was found."""
    kind: str
    """A stable machine-readable category, e.g. ``missing_variable``, ``wrong_dtype``."""

    def __str__(self) -> str:
        return f"{self.location}: {self.message} [{self.kind}]"


class SchemaError(ValueError):
    """Raised by ``parse_*``/``open_*`` helpers; carries every problem found."""

    def __init__(self, problems: Sequence[Problem], context: str = "") -> None:
        self.problems = list(problems)
        self.context = context
        head = f"{context}: " if context else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{head}{len(self.problems)} problem(s)\n{lines}")

    def __reduce__(self) -> tuple:
        # Raised inside a dask.distributed worker, it travels back pickled.
        return (type(self), (self.problems, self.context))


class UsageError(ValueError):
    """A bad command-line value (exit status 2), as opposed to bad data or an unusable path (1).

    The one class extract's preflight and the CLI's generated flags raise; ``cli.main`` reads
    ``exit_code``."""

    exit_code = 2
