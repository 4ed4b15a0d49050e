"""General tasks about words and numbers with one exact answer (reverse, sort, count...)."""

from __future__ import annotations

import random

from repcollapse.train.data.common import Example, pick
from repcollapse.train.data.general_common import exact, mk, sentence, words
from repcollapse.train.data.vocab import (
    ANTONYMS,
    NOUNS_FOR_SENTENCES,
    ORDINALS,
    PLURALS,
    WORDS,
)


def _reverse_word(rng: random.Random) -> Example:
    w = pick(rng, WORDS)
    p = pick(
        rng,
        (
            "Reverse the letters of the word '{w}'.",
            "Write '{w}' backwards.",
            "Spell the word {w} in reverse order.",
        ),
    )
    return mk(p.format(w=w), w[::-1], [exact(w[::-1])])


def _sort_words(rng: random.Random) -> Example:
    ws = words(rng, rng.randint(3, 6))
    out = ", ".join(sorted(ws))
    return mk(
        f"Sort these words alphabetically and write them separated by commas: {', '.join(ws)}",
        out,
        [exact(out)],
        2,
    )


def _count_words(rng: random.Random) -> Example:
    s = sentence(rng)
    if rng.random() < 0.5:
        s += f" near the {pick(rng, NOUNS_FOR_SENTENCES)}"
    n = len(s.split())
    return mk(
        f'How many words are in this sentence: "{s}."? Answer with a number.',
        str(n),
        [exact(str(n))],
    )


def _count_letter(rng: random.Random) -> Example:
    w = pick(rng, WORDS)
    c = pick(rng, w)
    n = w.count(c)
    return mk(
        f"How many times does the letter '{c}' appear in the word '{w}'?", str(n), [exact(str(n))]
    )


def _initials(rng: random.Random) -> Example:
    ws = words(rng, rng.randint(3, 6))
    out = "".join(w[0] for w in ws)
    return mk(
        f"Write the first letter of each of these words, in order, with no spaces: {' '.join(ws)}",
        out,
        [exact(out)],
    )


def _extreme_number(rng: random.Random) -> Example:
    nums = rng.sample(range(-50, 200), rng.randint(3, 7))
    which, val = pick(rng, (("largest", max(nums)), ("smallest", min(nums))))
    return mk(
        f"Which is the {which} number in this list: {', '.join(map(str, nums))}? "
        f"Answer with the number only.",
        str(val),
        [exact(str(val))],
    )


def _longest_word(rng: random.Random) -> Example:
    while True:
        ws = words(rng, rng.randint(3, 5))
        lens = sorted(len(w) for w in ws)
        if lens[-1] > lens[-2]:
            break
    best = max(ws, key=len)
    return mk(f"Which of these words is the longest: {', '.join(ws)}?", best, [exact(best)])


def _reverse_order(rng: random.Random) -> Example:
    ws = words(rng, rng.randint(3, 6))
    out = " ".join(reversed(ws))
    return mk(
        f"Write these words in reverse order, separated by spaces: {' '.join(ws)}",
        out,
        [exact(out)],
    )


def _join_hyphens(rng: random.Random) -> Example:
    ws = words(rng, rng.randint(2, 5))
    out = "-".join(ws)
    return mk(f"Join these words with hyphens and no spaces: {' '.join(ws)}", out, [exact(out)])


def _spell_dashes(rng: random.Random) -> Example:
    w = pick(rng, WORDS)
    out = "-".join(w)
    return mk(f"Spell the word '{w}' with a dash between each letter.", out, [exact(out)])


def _replace_letter(rng: random.Random) -> Example:
    w = pick(rng, WORDS)
    a = pick(rng, w)
    b = pick(rng, [c for c in "xzqjkv" if c != a])
    out = w.replace(a, b)
    return mk(f"Replace every '{a}' in the word '{w}' with '{b}'.", out, [exact(out)])


def _compare(rng: random.Random) -> Example:
    a, b = rng.sample(range(1, 1000), 2)
    op, ok = pick(rng, (("greater than", a > b), ("less than", a < b)))
    out = "yes" if ok else "no"
    return mk(f"Is {a} {op} {b}? Answer yes or no.", out, [exact(out)])


def _nth_word(rng: random.Random) -> Example:
    s = sentence(rng)
    ws = s.split()
    i = rng.randint(1, len(ws))
    return mk(
        f'What is the {ORDINALS[i]} word in the sentence "{s}."? Answer with the word only.',
        ws[i - 1],
        [exact(ws[i - 1])],
    )


def _count_vowels(rng: random.Random) -> Example:
    w = pick(rng, WORDS)
    n = sum(1 for c in w if c in "aeiou")
    return mk(f"How many vowels (a, e, i, o, u) are in the word '{w}'?", str(n), [exact(str(n))])


def _first_alpha(rng: random.Random) -> Example:
    ws = words(rng, rng.randint(3, 5))
    best = min(ws)
    return mk(
        f"Which of these words comes first in alphabetical order: {', '.join(ws)}?",
        best,
        [exact(best)],
    )


def _sum_numbers(rng: random.Random) -> Example:
    nums = [rng.randint(1, 50) for _ in range(rng.randint(2, 5))]
    return mk(
        f"Add up these numbers: {', '.join(map(str, nums))}. Reply with the total only.",
        str(sum(nums)),
        [exact(str(sum(nums)))],
    )


def _antonym(rng: random.Random) -> Example:
    a, b = pick(rng, ANTONYMS)
    if rng.random() < 0.5:
        a, b = b, a
    return mk(
        f"What is the opposite of '{a}'? Answer with one word.",
        b,
        [exact(b), {"type": "word_count", "n": 1}],
    )


def _plural(rng: random.Random) -> Example:
    s, p = pick(rng, PLURALS)
    return mk(
        f"What is the plural of '{s}'? Answer with one word.",
        p,
        [exact(p), {"type": "word_count", "n": 1}],
    )


TEMPLATES = (
    _reverse_word,
    _sort_words,
    _count_words,
    _count_letter,
    _initials,
    _extreme_number,
    _longest_word,
    _reverse_order,
    _join_hyphens,
    _spell_dashes,
    _replace_letter,
    _compare,
    _nth_word,
    _count_vowels,
    _first_alpha,
    _sum_numbers,
    _antonym,
    _plural,
)
