"""Helpers shared by the general (instruction-following) task modules."""

from __future__ import annotations

import random

from repcollapse.train.data.common import Example, pick, sample
from repcollapse.train.data.vocab import (
    ADJECTIVES,
    NOUNS_FOR_SENTENCES,
    VERBS_PAST,
    WORDS,
)


def exact(value: str, case_sensitive: bool = False) -> dict:
    return {"type": "exact", "value": value, "case_sensitive": case_sensitive}


def mk(prompt: str, response: str, checks: list[dict], level: int = 1) -> Example:
    return Example(prompt, response, {"checks": checks, "level": level})


def sentence(rng: random.Random) -> str:
    a1, a2 = sample(rng, ADJECTIVES, 2)
    n1, n2 = sample(rng, NOUNS_FOR_SENTENCES, 2)
    return f"The {a1} {n1} {pick(rng, VERBS_PAST)} the {a2} {n2}"


def words(rng: random.Random, k: int) -> list[str]:
    return sample(rng, WORDS, k)
