"""Future tasks: never used by any training stage, only to measure how fast a checkpoint can
still learn something new (sample efficiency after collapse).

Two symbolic tasks and one classification task; every record's response is the bare answer
and ``meta['answer']`` holds it (``meta['label']`` too for classification). The record's
``domain`` is the task name, the file is ``future/<task>.{train,eval}.jsonl``.
"""

from __future__ import annotations

import random

from repcollapse.train.data.common import Example, pick
from repcollapse.train.data.vocab import ANIMALS, COLORS, FRUITS, NAMES, WORDS

FUTURE_TASKS: tuple[str, ...] = ("cipher", "base_convert", "sentiment")


def _shift(word: str, k: int) -> str:
    return "".join(chr((ord(c) - 97 + k) % 26 + 97) for c in word)


def cipher(rng: random.Random) -> Example:
    """Letter-shift (Caesar) cipher on one lower-case word, shift 1..5, either direction."""
    word = pick(rng, WORDS + FRUITS + ANIMALS + COLORS)
    k = rng.randint(1, 5)
    if rng.random() < 0.6:
        prompt = pick(
            rng,
            (
                f"Encode the word '{word}' by shifting each letter {k} places forward in the alphabet "
                f"(z wraps to a). Answer with the encoded word only.",
                f"Apply a Caesar shift of +{k} to '{word}'. Reply with the result only.",
            ),
        )
        answer = _shift(word, k)
    else:
        coded = _shift(word, k)
        prompt = pick(
            rng,
            (
                f"The word '{coded}' was encoded by shifting each letter {k} places forward. "
                f"Decode it and answer with the original word only.",
                f"Undo a Caesar shift of +{k} on '{coded}'. Reply with the decoded word only.",
            ),
        )
        answer = word
    return Example(prompt, answer, {"answer": answer, "level": 1 if k <= 2 else 2})


_BASES = {2: "binary", 8: "octal", 16: "hexadecimal"}


def _to_base(n: int, b: int) -> str:
    digits = "0123456789abcdef"
    out = ""
    while True:
        n, r = divmod(n, b)
        out = digits[r] + out
        if n == 0:
            return out


def base_convert(rng: random.Random) -> Example:
    """Decimal to binary/octal/hex and back; the answer has no prefix (no 0b/0x)."""
    b = pick(rng, (2, 2, 8, 16))
    n = rng.randint(2, (64, 512, 4096)[rng.randint(0, 2)])
    if rng.random() < 0.6:
        prompt = (
            f"Convert the decimal number {n} to {_BASES[b]}. Answer with the digits only, "
            f"without a prefix."
        )
        answer = _to_base(n, b)
    else:
        prompt = f"Convert the {_BASES[b]} number {_to_base(n, b)} to decimal. Answer with the number only."
        answer = str(n)
    return Example(prompt, answer, {"answer": answer, "level": 1 if n < 64 else 2})


POSITIVE = (
    "wonderful",
    "excellent",
    "delightful",
    "fantastic",
    "lovely",
    "superb",
    "great",
    "charming",
    "impressive",
    "brilliant",
)
NEGATIVE = (
    "terrible",
    "awful",
    "disappointing",
    "boring",
    "dreadful",
    "poor",
    "horrible",
    "annoying",
    "broken",
    "useless",
)
SUBJECTS = (
    "movie",
    "restaurant",
    "hotel",
    "phone",
    "book",
    "concert",
    "laptop",
    "museum",
    "game",
    "jacket",
    "coffee shop",
    "train ride",
    "headphones",
    "pizza",
)
ASPECTS = (
    "the service",
    "the price",
    "the ending",
    "the staff",
    "the sound",
    "the design",
    "the food",
    "the story",
    "the battery",
    "the view",
)


def sentiment(rng: random.Random) -> Example:
    """Review sentiment, answer 'positive' or 'negative'; some reviews have a contrastive
    clause whose final verdict decides the label (harder level)."""
    label = pick(rng, ("positive", "negative"))
    good, bad = pick(rng, POSITIVE), pick(rng, NEGATIVE)
    subj, aspect = pick(rng, SUBJECTS), pick(rng, ASPECTS)
    main, other = (good, bad) if label == "positive" else (bad, good)
    level = rng.randint(1, 2)
    if level == 1:
        review = pick(
            rng,
            (
                f"The {subj} was {main}, and {aspect} was {main} too.",
                f"{pick(rng, NAMES)} said the {subj} was absolutely {main}.",
                f"What a {main} {subj}! {aspect.capitalize()} was {main}.",
            ),
        )
    else:
        verdict = "I loved it" if label == "positive" else "I would not go back"
        if subj in ("phone", "book", "laptop", "game", "jacket", "headphones", "pizza"):
            verdict = "I loved it" if label == "positive" else "I would not buy it again"
        review = f"Although {aspect} was {other}, the {subj} overall was {main} and {verdict}."
    prompt = pick(
        rng,
        (
            f'Classify the sentiment of this review as positive or negative: "{review}"',
            f'Review: "{review}" Is this review positive or negative? Answer with one word.',
        ),
    )
    return Example(prompt, label, {"answer": label, "label": label, "level": level})


GENERATORS = {"cipher": cipher, "base_convert": base_convert, "sentiment": sentiment}
