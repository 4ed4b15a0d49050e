"""Refusals for real harmful prompts: the prompts are real, these responses are ours.

The opening sentences are the generator's (``safety_tables.OPENERS``); the reason is generic
because the real prompts carry no category that maps onto ours. The refusal span covers the
whole response.
"""

from __future__ import annotations

import random

from repcollapse.train.data.common import Example, pick
from repcollapse.train.data.safety_tables import OPENERS

REASONS = (
    "It could cause serious harm to people.",
    "Helping with this could hurt someone or break the law.",
    "This request asks for something harmful, so I have to decline.",
    "Providing that would be unsafe and could be used to hurt others.",
    "That could put people at risk, so I won't provide it.",
)
OFFERS = (
    "If you have a related question that is safe, I'm happy to help with that instead.",
    "I can share general safety information or point you to legitimate resources.",
    "",
    "",
)


def refusal(rng: random.Random) -> tuple[str, tuple[tuple[str, int, int], ...]]:
    text = " ".join(t for t in (pick(rng, OPENERS), pick(rng, REASONS), pick(rng, OFFERS)) if t)
    return text, (("refusal", 0, len(text)),)


def answer(ex: Example, rng: random.Random) -> Example:
    """A real harmful prompt (``ex``, response empty) with a generated refusal."""
    text, marks = refusal(rng)
    meta = {"harmful": True, **ex.meta}
    return Example(ex.prompt, text, meta, marks, ex.source, ex.license, response_source="generated")
