"""Code task templates, part two (dicts, nested lists, parameterised filters)."""

from __future__ import annotations

import random

from repcollapse.train.data.code_common import ints, task, words
from repcollapse.train.data.common import Example, pick
from repcollapse.train.data.vocab import WORDS


def _second_largest(rng: random.Random) -> Example:
    def second(xs: list[int]) -> int:
        return sorted(set(xs))[-2]

    cases = [(rng.sample(range(-20, 60), rng.randint(2, 6)),) for _ in range(3)]
    return task(
        rng,
        ("second_largest", "runner_up"),
        "nums",
        "returns the second largest distinct value in a list with at least two distinct values",
        "    values = sorted(set(nums))\n    return values[-2]",
        second,
        cases,
        2,
    )


def _char_freq(rng: random.Random) -> Example:
    def freq(s: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for ch in s:
            out[ch] = out.get(ch, 0) + 1
        return out

    return task(
        rng,
        ("char_frequency", "letter_counts"),
        "s",
        "returns a dict mapping each character of s to how many times it occurs",
        "    counts = {}\n    for ch in s:\n        counts[ch] = counts.get(ch, 0) + 1\n    return counts",
        freq,
        [(w,) for w in words(rng, 3)],
        2,
    )


def _running_total(rng: random.Random) -> Example:
    def run(xs: list[int]) -> list[int]:
        out, t = [], 0
        for x in xs:
            t += x
            out.append(t)
        return out

    return task(
        rng,
        ("running_total", "cumulative_sum", "prefix_sums"),
        "nums",
        "returns the list of running totals of nums",
        "    out, total = [], 0\n    for x in nums:\n        total += x\n        out.append(total)\n    return out",
        run,
        [(ints(rng, rng.randint(0, 6)),) for _ in range(3)],
        2,
    )


def _invert_dict(rng: random.Random) -> Example:
    cases = []
    for _ in range(3):
        keys = [WORDS[i] for i in rng.sample(range(len(WORDS)), rng.randint(1, 4))]
        cases.append(({k: i for i, k in enumerate(keys)},))
    return task(
        rng,
        ("invert", "invert_dict", "swap_keys_values"),
        "d",
        "returns a new dict with keys and values swapped (the values are unique)",
        "    return {v: k for k, v in d.items()}",
        lambda d: {v: k for k, v in d.items()},
        cases,
        2,
    )


def _flatten(rng: random.Random) -> Example:
    cases = [
        ([ints(rng, rng.randint(0, 3), 0, 9) for _ in range(rng.randint(1, 4))],) for _ in range(3)
    ]
    return task(
        rng,
        ("flatten", "concat_lists"),
        "lists",
        "flattens a list of lists by one level into a single list",
        "    out = []\n    for inner in lists:\n        out.extend(inner)\n    return out",
        lambda ls: [x for inner in ls for x in inner],
        cases,
        2,
    )


def _count_longer(rng: random.Random) -> Example:
    n = rng.randint(3, 6)
    return task(
        rng,
        ("count_long_words", "long_word_count"),
        "words",
        f"returns how many words in the list have more than {n} letters",
        f"    return sum(1 for w in words if len(w) > {n})",
        lambda ws: sum(1 for w in ws if len(w) > n),
        [(words(rng, rng.randint(1, 5)),) for _ in range(3)],
        1,
    )


def _clamp(rng: random.Random) -> Example:
    lo, hi = rng.randint(-10, 5), rng.randint(6, 30)
    return task(
        rng,
        ("clamp", "limit"),
        "x, lo, hi",
        "returns x limited to the range [lo, hi]",
        "    if x < lo:\n        return lo\n    if x > hi:\n        return hi\n    return x",
        lambda x, a, b: min(max(x, a), b),
        [(lo - 3, lo, hi), (hi + 4, lo, hi), (rng.randint(lo, hi), lo, hi)],
        1,
    )


def _add_suffix(rng: random.Random) -> Example:
    suf = pick(rng, ("ing", "s", "er", "ly", "!", "_x"))
    return task(
        rng,
        ("add_suffix", "append_suffix"),
        "words",
        f"returns a new list where {suf!r} is appended to every word",
        f"    return [w + {suf!r} for w in words]",
        lambda ws: [w + suf for w in ws],
        [(words(rng, rng.randint(0, 4)),) for _ in range(3)],
        1,
    )


def _min_max(rng: random.Random) -> Example:
    return task(
        rng,
        ("min_max", "extremes"),
        "nums",
        "returns a tuple (smallest, largest) of a non-empty list",
        "    return (min(nums), max(nums))",
        lambda xs: (min(xs), max(xs)),
        [(ints(rng, rng.randint(1, 6)),) for _ in range(3)],
        1,
    )


def _square_evens(rng: random.Random) -> Example:
    return task(
        rng,
        ("square_evens", "even_squares"),
        "nums",
        "returns the squares of the even numbers in nums, in order",
        "    return [x * x for x in nums if x % 2 == 0]",
        lambda xs: [x * x for x in xs if x % 2 == 0],
        [(ints(rng, rng.randint(1, 7), -9, 20),) for _ in range(3)],
        2,
    )


def _starts_with(rng: random.Random) -> Example:
    ws = [words(rng, rng.randint(2, 6)) for _ in range(3)]
    letter = pick(rng, ws[0])[0]
    return task(
        rng,
        ("starting_with", f"words_with_{letter}"),
        "words",
        f"returns the words that start with the letter {letter!r}, in order",
        f"    return [w for w in words if w.startswith({letter!r})]",
        lambda xs: [w for w in xs if w.startswith(letter)],
        [(w,) for w in ws],
        1,
    )


def _power_of_two(rng: random.Random) -> Example:
    return task(
        rng,
        ("is_power_of_two", "power_of_two"),
        "n",
        "returns True if the positive integer n is a power of two, else False",
        "    while n % 2 == 0 and n > 1:\n        n //= 2\n    return n == 1",
        lambda n: n > 0 and n & (n - 1) == 0,
        [(2 ** rng.randint(0, 10),), (rng.randint(3, 200),), (rng.randint(3, 200),)],
        2,
    )


def _mean(rng: random.Random) -> Example:
    cases = []
    for _ in range(3):
        k, m = rng.randint(1, 5), rng.randint(-5, 20)
        xs = [m + rng.randint(-4, 4) for _ in range(k - 1)]
        cases.append((xs + [m * k - sum(xs)],))
    return task(
        rng,
        ("mean", "average"),
        "nums",
        "returns the arithmetic mean of a non-empty list as a float",
        "    return sum(nums) / len(nums)",
        lambda xs: sum(xs) / len(xs),
        cases,
        1,
    )


def _fizzbuzz(rng: random.Random) -> Example:
    def fb(n: int) -> str:
        if n % 15 == 0:
            return "FizzBuzz"
        if n % 3 == 0:
            return "Fizz"
        return "Buzz" if n % 5 == 0 else str(n)

    return task(
        rng,
        ("fizzbuzz", "fizz_buzz"),
        "n",
        "returns 'Fizz' for multiples of 3, 'Buzz' for multiples of 5, 'FizzBuzz' for "
        "multiples of both, and otherwise the number as a string",
        "    if n % 15 == 0:\n        return 'FizzBuzz'\n    if n % 3 == 0:\n        return 'Fizz'\n"
        "    if n % 5 == 0:\n        return 'Buzz'\n    return str(n)",
        fb,
        [
            (15 * rng.randint(1, 6),),
            (3 * rng.randint(1, 10) + 1,),
            (5 * rng.randint(1, 9),),
            (3 * rng.randint(1, 20),),
        ],
        2,
    )


def _acronym(rng: random.Random) -> Example:
    return task(
        rng,
        ("acronym", "initials"),
        "text",
        "returns the upper-case first letters of the words in text, joined together",
        "    return ''.join(w[0].upper() for w in text.split())",
        lambda t: "".join(w[0].upper() for w in t.split()),
        [(" ".join(words(rng, rng.randint(1, 5))),) for _ in range(3)],
        1,
    )


def _count_positive(rng: random.Random) -> Example:
    return task(
        rng,
        ("count_positive", "positives"),
        "nums",
        "returns how many numbers in the list are strictly positive",
        "    return sum(1 for x in nums if x > 0)",
        lambda xs: sum(1 for x in xs if x > 0),
        [(ints(rng, rng.randint(0, 7)),) for _ in range(3)],
        1,
    )


def _merge_sorted(rng: random.Random) -> Example:
    cases = [
        (sorted(ints(rng, rng.randint(0, 4))), sorted(ints(rng, rng.randint(0, 4))))
        for _ in range(3)
    ]
    return task(
        rng,
        ("merge_sorted", "merge"),
        "a, b",
        "merges two sorted lists into one sorted list",
        "    return sorted(a + b)",
        lambda a, b: sorted(a + b),
        cases,
        2,
    )


def _repeat(rng: random.Random) -> Example:
    sep = pick(rng, ("-", " ", ",", ""))
    return task(
        rng,
        ("repeat_word", "repeat"),
        "word, n",
        f"returns the word repeated n times, joined by {sep!r}",
        f"    return {sep!r}.join([word] * n)",
        lambda w, n: sep.join([w] * n),
        [(pick(rng, WORDS), rng.randint(0, 4)) for _ in range(3)],
        1,
    )


TEMPLATES = (
    _second_largest,
    _char_freq,
    _running_total,
    _invert_dict,
    _flatten,
    _count_longer,
    _clamp,
    _add_suffix,
    _min_max,
    _square_evens,
    _starts_with,
    _power_of_two,
    _mean,
    _fizzbuzz,
    _acronym,
    _count_positive,
    _merge_sorted,
    _repeat,
)
