"""Helpers for the code task templates: prompt phrasings and the task builder."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from repcollapse.train.data.common import Example, pick
from repcollapse.train.data.vocab import WORDS

PROMPTS = (
    "Write a Python function `{sig}` that {desc}.",
    "Implement `{sig}` in Python: it {desc}.",
    "Create a Python function named `{name}` with signature `{sig}` that {desc}.",
    "In Python, define `{sig}`, which {desc}.",
    "Please write `{sig}` in Python. The function {desc}.",
)


def ints(rng: random.Random, n: int, lo: int = -20, hi: int = 50) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(n)]


def words(rng: random.Random, n: int) -> list[str]:
    return [pick(rng, WORDS) for _ in range(n)]


def task(
    rng: random.Random,
    names: tuple[str, ...],
    params: str,
    desc: str,
    body: str,
    fn: Callable[..., Any],
    inputs: list[tuple[Any, ...]],
    level: int,
) -> Example:
    name = pick(rng, names)
    sig = f"{name}({params})"
    prompt = pick(rng, PROMPTS).format(sig=sig, name=name, desc=desc)
    source = f"def {sig}:\n{body}"
    calls = [f"{name}({', '.join(repr(a) for a in args)})" for args in inputs]
    expected = [fn(*args) for args in inputs]
    tests = [f"assert {c} == {e!r}" for c, e in zip(calls, expected, strict=True)]
    if rng.random() < 0.75:
        # A worked call in the prompt: helps a small model and makes prompts more varied.
        prompt += f" For example, `{calls[0]}` should return `{expected[0]!r}`."
    response = f"```python\n{source}\n```"
    return Example(prompt, response, {"entry_point": name, "tests": tests, "level": level})
