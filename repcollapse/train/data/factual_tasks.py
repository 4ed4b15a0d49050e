"""Open-domain factual text for the probe corpus (no training pool uses it).

Short encyclopedic passages templated from the small fact tables in ``vocab``; facts are
limited to well-known, stable ones (capitals, continents, element symbols and numbers, planet
order).
"""

from __future__ import annotations

import random

from repcollapse.train.data.common import Example, pick
from repcollapse.train.data.vocab import COUNTRIES, ELEMENTS, ORDINALS, PLANETS


def _country(rng: random.Random) -> Example:
    country, capital, continent = pick(rng, COUNTRIES)
    others = [c for c in COUNTRIES if c[2] == continent and c[0] != country]
    neighbor = pick(rng, others) if others else None
    prompt = pick(
        rng,
        (
            f"Tell me about {country}.",
            f"What is the capital of {country}?",
            f"Where is {country}, and what is its capital city?",
            f"Write a short encyclopedia entry about {capital}.",
            f"Which country has {capital} as its capital?",
        ),
    )
    text = (
        f"{country} is a country in {continent}. Its capital city is {capital}, which is also "
        f"the seat of its national government."
    )
    if neighbor is not None:
        text += (
            f" Like {neighbor[0]}, whose capital is {neighbor[1]}, {country} is one of the "
            f"countries of {continent}."
        )
    return Example(prompt, text, {"template": "country"})


def _element(rng: random.Random) -> Example:
    name, symbol, number = pick(rng, ELEMENTS)
    prompt = pick(
        rng,
        (
            f"What is the chemical symbol for {name}?",
            f"Tell me about the element {name}.",
            f"What is the atomic number of {name}?",
            f"Which element has the symbol {symbol}?",
            f"Describe the chemical element with atomic number {number}.",
        ),
    )
    text = (
        f"{name.capitalize()} is a chemical element with the symbol {symbol} and atomic number "
        f"{number}. Every atom of {name} has {number} proton{'s' if number > 1 else ''} in its "
        f"nucleus, which is what makes it {name}."
    )
    return Example(prompt, text, {"template": "element"})


def _planet(rng: random.Random) -> Example:
    name, pos, desc = pick(rng, PLANETS)
    prompt = pick(
        rng,
        (
            f"Tell me about the planet {name}.",
            f"Where is {name} in the solar system?",
            f"Describe {name} in a few sentences.",
            f"Which planet is {ORDINALS[pos]} from the Sun?",
            f"What kind of planet is {name}?",
        ),
    )
    text = (
        f"{name} is the {ORDINALS[pos]} planet from the Sun. It is {desc}. Like the other "
        f"planets, {name} travels around the Sun in a nearly circular orbit."
    )
    return Example(prompt, text, {"template": "planet"})


def _compare_capitals(rng: random.Random) -> Example:
    i, j = rng.sample(range(len(COUNTRIES)), 2)
    (c1, k1, m1), (c2, k2, m2) = COUNTRIES[i], COUNTRIES[j]
    prompt = f"Compare {c1} and {c2}: where are they and what are their capitals?"
    same = "Both are in " + m1 + "." if m1 == m2 else f"{c1} is in {m1}, while {c2} is in {m2}."
    text = f"{same} The capital of {c1} is {k1}, and the capital of {c2} is {k2}."
    return Example(prompt, text, {"template": "compare_capitals"})


def _element_pair(rng: random.Random) -> Example:
    i, j = sorted(rng.sample(range(len(ELEMENTS)), 2))
    (n1, s1, z1), (n2, s2, z2) = ELEMENTS[i], ELEMENTS[j]
    prompt = f"Which has more protons, {n1} or {n2}?"
    text = (
        f"{n2.capitalize()} ({s2}) has atomic number {z2}, and {n1} ({s1}) has atomic number "
        f"{z1}. So {n2} has more protons: {z2} compared with {z1}."
    )
    return Example(prompt, text, {"template": "element_pair"})


TEMPLATES = (_country, _element, _planet, _compare_capitals, _element_pair)


def generate(rng: random.Random) -> Example:
    return pick(rng, TEMPLATES)(rng)
