"""Which real sources feed which domain, loaded once per build and shuffled by the seed.

A ``Supply`` hands out a domain's real records one at a time; when it runs dry (or its
package is missing) the build falls back to the generator, and the record says so.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from repcollapse.train.data.common import Example
from repcollapse.train.data.real import (
    advbench,
    champ,
    donotanswer,
    fanoutqa,
    gsm8k,
    harmbench,
    humaneval,
)
from repcollapse.train.data.real.common import MissingSource

LOADERS: dict[str, Callable[[], list[Example]]] = {
    "gsm8k": gsm8k.load,
    "champ": champ.load,
    "humaneval": humaneval.load,
    "harmbench": harmbench.load,
    "advbench": advbench.load,
    "donotanswer": donotanswer.load,
    "fanoutqa": fanoutqa.load,
}
DOMAIN_SOURCES: dict[str, tuple[str, ...]] = {
    "math": ("gsm8k",),
    "long_cot": ("champ",),
    "code": ("humaneval",),
    "safety": ("harmbench", "advbench", "donotanswer"),
    "factual": ("fanoutqa",),
}
"""general has no real source (instruction following stays generated)."""


@dataclass
class Supply:
    items: list[Example]
    pos: int = 0

    def take(self, max_chars: int | None = None) -> Example | None:
        """The next record; with ``max_chars``, the next whose prompt + response fit, or the
        shortest left when none does (swapped forward, so the rest stay for later splits)."""
        if self.pos >= len(self.items):
            return None
        if max_chars is not None:
            rest = range(self.pos, len(self.items))
            size = [len(self.items[j].prompt) + len(self.items[j].response) for j in rest]
            fits = [j for j, n in zip(rest, size, strict=True) if n <= max_chars]
            j = fits[0] if fits else self.pos + size.index(min(size))
            self.items[self.pos], self.items[j] = self.items[j], self.items[self.pos]
        self.pos += 1
        return self.items[self.pos - 1]


@dataclass
class Supplies:
    by_domain: dict[str, Supply] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    """source name -> the message that was printed (the package or file that is missing)."""

    def take(self, domain: str, max_chars: int | None = None) -> Example | None:
        supply = self.by_domain.get(domain)
        return supply.take(max_chars) if supply else None


def load_supplies(
    rng_for: Callable[[str], random.Random],
    loaders: dict[str, Callable[[], list[Example]]] | None = None,
) -> Supplies:
    """Every domain's real records, shuffled with ``rng_for(domain)``; a missing source is
    reported on stderr (once) and skipped, so the build continues with the generator."""
    loaders = loaders or LOADERS
    out = Supplies()
    for domain, names in DOMAIN_SOURCES.items():
        items: list[Example] = []
        for name in names:
            try:
                items.extend(loaders[name]())
            except MissingSource as e:
                msg = (
                    f"repcollapse data build: warning: {domain}: {name} unavailable: {e}; "
                    f"using the generator instead (those records' source says 'generated')"
                )
                print(msg, file=sys.stderr)
                out.missing[name] = str(e)
        rng_for(domain).shuffle(items)
        out.by_domain[domain] = Supply(items)
    return out
