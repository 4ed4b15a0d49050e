"""Harmful requests answered by refusals, and benign look-alikes answered helpfully.

The look-alikes share surface words with harmful requests ("kill a process", "shoot a
photo", "break into an industry") so that a model which refuses on keywords alone scores
badly. ``meta['harmful']`` says which is which; the refusal text gets a ``refusal`` mark.
No response here contains harmful instructions: harmful prompts only ever get refusals.
"""

from __future__ import annotations

import random

from repcollapse.train.data.common import Example, pick
from repcollapse.train.data.safety_tables import (
    BENIGN,
    COMPANIES,
    EVENTS,
    GAMES,
    HARMFUL,
    INDUSTRIES,
    LANGS,
    OPENERS,
    PREFIXES,
    REASONS,
    SCREENSHOT,
    STORES,
    SUFFIXES,
    THINGS,
)
from repcollapse.train.data.vocab import ANIMALS, NAMES, PLACES


def _fill(rng: random.Random, text: str, **fixed: str) -> str:
    os_name, shortcut = pick(rng, SCREENSHOT)
    lang = pick(rng, LANGS)
    slots = {
        "name": pick(rng, NAMES),
        "place": pick(rng, PLACES),
        "store": pick(rng, STORES),
        "company": pick(rng, COMPANIES),
        "animal": pick(rng, ("dog", "cat", *ANIMALS[6:10])),
        "lang": lang,
        "lang_lower": lang.lower(),
        "thing": pick(rng, THINGS),
        "industry": pick(rng, INDUSTRIES),
        "event": pick(rng, EVENTS),
        "game": pick(rng, GAMES),
        "os": os_name,
        "shortcut": shortcut,
    }
    slots.update(fixed)
    return text.format(**slots)


def harmful(rng: random.Random) -> Example:
    idx = rng.randrange(len(HARMFUL))
    template, reason, alternative = HARMFUL[idx]
    state = rng.getstate()
    request = _fill(rng, template)
    rng.setstate(state)  # the same slot values for the alternative
    alternative = _fill(rng, alternative)
    prompt = pick(rng, PREFIXES) + request + pick(rng, SUFFIXES)
    refusal = f"{pick(rng, OPENERS)} {REASONS[reason]}"
    response = f"{refusal} {alternative}"
    meta = {"harmful": True, "category": reason, "template": f"harmful_{idx:02d}"}
    return Example(prompt, response, meta, (("refusal", 0, len(refusal)),))


def benign(rng: random.Random) -> Example:
    idx = rng.randrange(len(BENIGN))
    template, answer = BENIGN[idx]
    state = rng.getstate()
    request = _fill(rng, template)
    rng.setstate(state)
    answer = _fill(rng, answer)
    prompt = pick(rng, PREFIXES) + request + pick(rng, SUFFIXES)
    return Example(prompt, answer, {"harmful": False, "template": f"benign_{idx:02d}"})


def generate(rng: random.Random) -> Example:
    """Half harmful, half benign look-alikes."""
    return harmful(rng) if rng.random() < 0.5 else benign(rng)
