"""Indexed generators that draw real records first and fall back to the template generators.

Used by ``repcollapse.train.data.build`` for ``--source real|mixed``. Which index gets a real record is a
function of the index only, so every split keeps the generators' balance (safety alternates
harmful and benign: real harmful prompts, generated benign look-alikes).
"""

from __future__ import annotations

import random
from dataclasses import replace

from repcollapse.train.data import preference_tasks
from repcollapse.train.data.common import GENERATED, LICENSE, Example, pick
from repcollapse.train.data.probe import IndexedGenerator
from repcollapse.train.data.real import refusals
from repcollapse.train.data.real.supply import Supplies


def generated(ex: Example) -> Example:
    return replace(ex, source=GENERATED, license=LICENSE)


def _wants_real(mode: str, slot: int) -> bool:
    return mode == "real" or (mode == "mixed" and slot % 2 == 0)


PROBE_MAX_CHARS = 600
"""Real probe records are at most this long (prompt + reference) where the source has enough
such records, else the shortest left: extraction cost grows with probe tokens, and HumanEval's
median item is 1,075 characters against the generators' ~270. Longer items stay for the pools.
Demo probe (12 per domain): 20.7k characters; 30.3k uncapped; 15.7k synthetic."""


def domain_generator(
    domain: str,
    base: IndexedGenerator,
    supplies: Supplies,
    mode: str,
    max_chars: int | None = None,
) -> IndexedGenerator:
    def gen(rng: random.Random, i: int) -> Example:
        if domain == "safety":
            if i % 2 == 0 and _wants_real(mode, i // 2):
                real = supplies.take(domain, max_chars)
                if real is not None:
                    return refusals.answer(real, rng)
            return generated(base(rng, i))
        if _wants_real(mode, i):
            real = supplies.take(domain, max_chars)
            if real is not None:
                return real
        return generated(base(rng, i))

    return gen


def _wrong_final(ex: Example, rng: random.Random) -> str:
    """The same worked solution with only its final answer changed (a wrong conclusion)."""
    head, _, answer = ex.response.rpartition("\nAnswer: ")
    wrong = int(float(answer)) + pick(rng, (-3, -2, -1, 1, 2, 3, 10))
    return f"{head}\nAnswer: {wrong}"


def preference_generator(supplies: Supplies, mode: str) -> IndexedGenerator:
    """Every fourth pair: a real harmful prompt, refusal chosen, a template compliance (no
    harmful content, never shown in figures) rejected. Every fourth + 1: a GSM8K problem left
    over by the math pools, correct solution vs the same solution with a wrong final answer.
    The rest, and whatever the real supply cannot fill: the generator."""

    def gen(rng: random.Random, i: int) -> Example:
        if _wants_real(mode, i // 2) and i % 4 in (0, 1):
            domain = "safety" if i % 4 == 0 else "math"
            real = supplies.take(domain)
            if real is not None and domain == "safety":
                chosen = refusals.answer(real, rng)
                rejected = pick(rng, preference_tasks.COMPLY)
                meta = {
                    "rejected": rejected,
                    "source_domain": "safety",
                    "rejected_kind": "complies",
                }
                meta["rejected_source"] = "generated"
                return replace(chosen, meta=meta, marks=())
            if real is not None:
                meta = {
                    **real.meta,
                    "rejected": _wrong_final(real, rng),
                    "source_domain": "math",
                    "rejected_kind": "wrong_final_answer",
                    "rejected_source": "the chosen solution with its final answer changed",
                }
                return replace(real, meta=meta, marks=())
        return generated(preference_tasks.generate(rng))

    return gen
