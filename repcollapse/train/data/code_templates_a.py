"""Code task templates, part one (numbers, strings, simple lists)."""

from __future__ import annotations

import random

from repcollapse.train.data.code_common import ints, task, words
from repcollapse.train.data.common import Example, pick


def _sum_list(rng: random.Random) -> Example:
    return task(
        rng,
        ("sum_list", "total", "add_all"),
        "nums",
        "returns the sum of a list of numbers",
        "    total = 0\n    for x in nums:\n        total += x\n    return total",
        sum,
        [(ints(rng, rng.randint(0, 6)),) for _ in range(3)],
        1,
    )


def _largest(rng: random.Random) -> Example:
    return task(
        rng,
        ("largest", "max_value", "biggest"),
        "nums",
        "returns the largest number in a non-empty list",
        "    best = nums[0]\n    for x in nums[1:]:\n        if x > best:\n            best = x\n    return best",
        max,
        [(ints(rng, rng.randint(1, 6)),) for _ in range(3)],
        1,
    )


def _count_vowels(rng: random.Random) -> Example:
    return task(
        rng,
        ("count_vowels", "vowel_count"),
        "text",
        "returns how many vowels (a, e, i, o, u, either case) are in a string",
        "    return sum(1 for ch in text.lower() if ch in 'aeiou')",
        lambda t: sum(1 for c in t.lower() if c in "aeiou"),
        [(" ".join(words(rng, rng.randint(1, 3))).title(),) for _ in range(3)],
        1,
    )


def _reverse(rng: random.Random) -> Example:
    return task(
        rng,
        ("reverse_string", "reverse_text", "backwards"),
        "s",
        "returns the string reversed",
        "    return s[::-1]",
        lambda s: s[::-1],
        [(w,) for w in words(rng, 3)],
        1,
    )


def _palindrome(rng: random.Random) -> Example:
    cases = [(w,) for w in words(rng, 2)] + [(pick(rng, ("level", "noon", "racecar", "refer")),)]
    return task(
        rng,
        ("is_palindrome", "palindrome"),
        "word",
        "returns True if the word reads the same forwards and backwards, else False",
        "    return word == word[::-1]",
        lambda w: w == w[::-1],
        cases,
        1,
    )


def _factorial(rng: random.Random) -> Example:
    def fact(n: int) -> int:
        r = 1
        for i in range(2, n + 1):
            r *= i
        return r

    return task(
        rng,
        ("factorial", "fact"),
        "n",
        "returns n! for a non-negative integer n",
        "    result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return result",
        fact,
        [(0,), (rng.randint(1, 5),), (rng.randint(6, 10),)],
        2,
    )


def _fib(rng: random.Random) -> Example:
    def fib(n: int) -> int:
        a, b = 0, 1
        for _ in range(n):
            a, b = b, a + b
        return a

    return task(
        rng,
        ("fib", "fibonacci"),
        "n",
        "returns the n-th Fibonacci number, with fib(0) = 0 and fib(1) = 1",
        "    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
        fib,
        [(0,), (rng.randint(1, 8),), (rng.randint(9, 20),)],
        2,
    )


def _scale(rng: random.Random) -> Example:
    k = rng.randint(2, 9)
    return task(
        rng,
        ("scale", "multiply_all", f"times_{k}"),
        "nums",
        f"returns a new list with every number multiplied by {k}",
        f"    return [x * {k} for x in nums]",
        lambda xs: [x * k for x in xs],
        [(ints(rng, rng.randint(0, 5)),) for _ in range(3)],
        1,
    )


def _filter_greater(rng: random.Random) -> Example:
    t = rng.randint(0, 20)
    return task(
        rng,
        ("keep_greater", "above", "filter_big"),
        "nums",
        f"returns the numbers greater than {t}, in their original order",
        f"    return [x for x in nums if x > {t}]",
        lambda xs: [x for x in xs if x > t],
        [(ints(rng, rng.randint(2, 7)),) for _ in range(3)],
        1,
    )


def _count_char(rng: random.Random) -> Example:
    cases = []
    for _ in range(3):
        w = " ".join(words(rng, 2))
        cases.append((w, pick(rng, w.replace(" ", ""))))
    return task(
        rng,
        ("count_char", "occurrences"),
        "text, ch",
        "returns how many times the character ch occurs in text",
        "    return text.count(ch)",
        lambda t, c: t.count(c),
        cases,
        1,
    )


def _dedupe(rng: random.Random) -> Example:
    def dedupe(xs: list[int]) -> list[int]:
        out: list[int] = []
        for x in xs:
            if x not in out:
                out.append(x)
        return out

    return task(
        rng,
        ("dedupe", "remove_duplicates", "unique_in_order"),
        "items",
        "returns the items without duplicates, keeping the first occurrence order",
        "    seen = []\n    for x in items:\n        if x not in seen:\n            seen.append(x)\n    return seen",
        dedupe,
        [(ints(rng, rng.randint(3, 8), 0, 5),) for _ in range(3)],
        2,
    )


def _c_to_f(rng: random.Random) -> Example:
    return task(
        rng,
        ("c_to_f", "celsius_to_fahrenheit"),
        "c",
        "converts a temperature from Celsius to Fahrenheit (F = C * 9 / 5 + 32)",
        "    return c * 9 / 5 + 32",
        lambda c: c * 9 / 5 + 32,
        [(5 * rng.randint(-8, 20),) for _ in range(3)],
        1,
    )


def _gcd(rng: random.Random) -> Example:
    def gcd(a: int, b: int) -> int:
        while b:
            a, b = b, a % b
        return a

    cases = []
    for _ in range(3):
        g = rng.randint(1, 12)
        cases.append((g * rng.randint(1, 12), g * rng.randint(1, 12)))
    return task(
        rng,
        ("gcd", "greatest_common_divisor"),
        "a, b",
        "returns the greatest common divisor of two positive integers",
        "    while b:\n        a, b = b, a % b\n    return a",
        gcd,
        cases,
        2,
    )


def _is_prime(rng: random.Random) -> Example:
    def prime(n: int) -> bool:
        return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))

    return task(
        rng,
        ("is_prime", "prime"),
        "n",
        "returns True if n is a prime number, else False",
        "    if n < 2:\n        return False\n    for d in range(2, int(n ** 0.5) + 1):\n"
        "        if n % d == 0:\n            return False\n    return True",
        prime,
        [
            (1,),
            (pick(rng, (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)),),
            (rng.randint(4, 100),),
            (rng.randint(4, 100),),
        ],
        2,
    )


def _sum_digits(rng: random.Random) -> Example:
    return task(
        rng,
        ("sum_digits", "digit_sum"),
        "n",
        "returns the sum of the decimal digits of a non-negative integer",
        "    return sum(int(d) for d in str(n))",
        lambda n: sum(int(d) for d in str(n)),
        [(rng.randint(0, 10**k),) for k in (1, 3, 5)],
        1,
    )


def _word_count(rng: random.Random) -> Example:
    return task(
        rng,
        ("word_count", "count_words"),
        "text",
        "returns the number of words in text, where words are separated by spaces",
        "    return len(text.split())",
        lambda t: len(t.split()),
        [(" ".join(words(rng, rng.randint(1, 6))),) for _ in range(3)],
        1,
    )


def _title_words(rng: random.Random) -> Example:
    return task(
        rng,
        ("capitalize_words", "title_case"),
        "text",
        "returns text with the first letter of every word in upper case "
        "(words separated by single spaces)",
        "    return ' '.join(w[:1].upper() + w[1:] for w in text.split(' '))",
        lambda t: " ".join(w[:1].upper() + w[1:] for w in t.split(" ")),
        [(" ".join(words(rng, rng.randint(1, 4))),) for _ in range(3)],
        1,
    )


TEMPLATES = (
    _sum_list,
    _largest,
    _count_vowels,
    _reverse,
    _palindrome,
    _factorial,
    _fib,
    _scale,
    _filter_greater,
    _count_char,
    _dedupe,
    _c_to_f,
    _gcd,
    _is_prime,
    _sum_digits,
    _word_count,
    _title_words,
)
