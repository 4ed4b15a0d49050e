"""Math word problems with a short worked solution ending in ``Answer: X``.

Every answer is an exact integer, so the scorer can check it exactly. Three difficulty levels
scale the numbers; the reasoning is one or two short lines so that training stays cheap.
"""

from __future__ import annotations

import random

from repcollapse.train.data.common import Example, answer_marks, choose_template, fmt_num, pick
from repcollapse.train.data.vocab import CONTAINERS, ITEMS_FOR_SALE, NAMES, OBJECTS, VEHICLES

RANGES = ((2, 12), (10, 60), (40, 300))
SUFFIXES = (
    "",
    "",
    " Give the final answer on a line starting with 'Answer:'.",
    " Show your work briefly.",
    " End with 'Answer: <number>'.",
    " Explain briefly, then give the answer.",
)


def _n(rng: random.Random, lv: int) -> int:
    lo, hi = RANGES[lv - 1]
    return rng.randint(lo, hi)


def _mk(rng: random.Random, question: str, work: str, answer: int, lv: int) -> Example:
    response = f"{work}\nAnswer: {answer}"
    prompt = question + pick(rng, SUFFIXES)
    return Example(prompt, response, {"answer": str(answer), "level": lv}, answer_marks(response))


def _two_names(rng: random.Random) -> tuple[str, str]:
    a = pick(rng, NAMES)
    b = pick(rng, [n for n in NAMES if n != a])
    return a, b


def _lv(rng: random.Random) -> int:
    return rng.randint(1, 3)


def _add_more(rng: random.Random) -> Example:
    lv, name, (_, objs) = _lv(rng), pick(rng, NAMES), pick(rng, OBJECTS)
    a, b = _n(rng, lv), _n(rng, lv)
    q = f"{name} has {a} {objs} and gets {b} more. How many {objs} does {name} have now?"
    return _mk(rng, q, f"{name} starts with {a} and gets {b} more: {a} + {b} = {a + b}.", a + b, lv)


def _give_away(rng: random.Random) -> Example:
    lv, (name, other), (_, objs) = _lv(rng), _two_names(rng), pick(rng, OBJECTS)
    b = _n(rng, lv)
    a = b + _n(rng, lv)
    q = f"{name} has {a} {objs} and gives {b} of them to {other}. How many {objs} are left?"
    return _mk(rng, q, f"Giving away {b} of {a} leaves {a} - {b} = {a - b}.", a - b, lv)


def _groups(rng: random.Random) -> Example:
    lv, (_, objs), (_, boxes) = _lv(rng), pick(rng, OBJECTS), pick(rng, CONTAINERS)
    a, b = rng.randint(2, 4 + 4 * lv), rng.randint(2, 4 + 4 * lv)
    q = f"There are {a} {boxes} with {b} {objs} in each. How many {objs} are there in total?"
    return _mk(rng, q, f"{a} {boxes} of {b} {objs} each: {a} * {b} = {a * b}.", a * b, lv)


def _share(rng: random.Random) -> Example:
    lv, name, (_, objs) = _lv(rng), pick(rng, NAMES), pick(rng, OBJECTS)
    k, each = rng.randint(2, 3 + 3 * lv), rng.randint(2, 3 + 4 * lv)
    q = f"{name} shares {k * each} {objs} equally among {k} friends. How many does each friend get?"
    return _mk(rng, q, f"Dividing {k * each} by {k}: {k * each} / {k} = {each}.", each, lv)


def _price_total(rng: random.Random) -> Example:
    lv, item = _lv(rng), pick(rng, ITEMS_FOR_SALE)
    p, k = _n(rng, lv), rng.randint(2, 9)
    q = f"One {item} costs ${p}. How many dollars do {k} of them cost?"
    return _mk(rng, q, f"Each costs ${p}, so {k} cost {k} * {p} = {k * p} dollars.", k * p, lv)


def _change(rng: random.Random) -> Example:
    lv, name, item = _lv(rng), pick(rng, NAMES), pick(rng, ITEMS_FOR_SALE)
    bill = (20, 50, 100)[lv - 1]
    p = rng.randint(1, bill - 1)
    q = f"{name} pays for a {item} costing ${p} with a ${bill} bill. How much change, in dollars?"
    return _mk(rng, q, f"The change is {bill} - {p} = {bill - p} dollars.", bill - p, lv)


def _percent_of(rng: random.Random) -> Example:
    lv = _lv(rng)
    p = pick(rng, ((10, 50), (10, 20, 25, 50), (5, 15, 30, 40, 60, 75))[lv - 1])
    x = 20 * rng.randint(1, 5 * lv)
    ans = p * x // 100
    q = f"What is {p}% of {x}?"
    return _mk(rng, q, f"{p}% of {x} is {p}/100 * {x} = {ans}.", ans, lv)


def _discount(rng: random.Random) -> Example:
    lv, item = _lv(rng), pick(rng, ITEMS_FOR_SALE)
    p = pick(rng, (10, 20, 25, 50))
    x = 20 * rng.randint(1, 3 * lv)
    off = p * x // 100
    q = f"A {item} costs ${x} and is on sale for {p}% off. What is the sale price in dollars?"
    w = f"The discount is {p}% of {x} = {off}, so the price is {x} - {off} = {x - off}."
    return _mk(rng, q, w, x - off, lv)


def _average(rng: random.Random) -> Example:
    lv = _lv(rng)
    k = rng.randint(2, 3 + lv)
    mean = _n(rng, lv)
    nums = [mean + rng.randint(-lv * 3, lv * 3) for _ in range(k - 1)]
    nums.append(mean * k - sum(nums))
    total = sum(nums)
    q = f"What is the average of {', '.join(map(str, nums))}?"
    w = f"The sum is {total} and there are {k} numbers, so {total} / {k} = {mean}."
    return _mk(rng, q, w, mean, lv)


def _rect_area(rng: random.Random) -> Example:
    lv = _lv(rng)
    w, h = _n(rng, lv), _n(rng, lv)
    q = f"A rectangle is {w} cm wide and {h} cm long. What is its area in square centimeters?"
    return _mk(rng, q, f"Area = width * length = {w} * {h} = {w * h}.", w * h, lv)


def _rect_perimeter(rng: random.Random) -> Example:
    lv = _lv(rng)
    w, h = _n(rng, lv), _n(rng, lv)
    ans = 2 * (w + h)
    q = f"What is the perimeter, in meters, of a rectangle {w} m by {h} m?"
    return _mk(rng, q, f"Perimeter = 2 * ({w} + {h}) = 2 * {w + h} = {ans}.", ans, lv)


def _square(rng: random.Random) -> Example:
    lv = _lv(rng)
    s = _n(rng, lv)
    if rng.random() < 0.5:
        q = f"A square has sides of {s} cm. What is its perimeter in cm?"
        return _mk(rng, q, f"A square has 4 equal sides: 4 * {s} = {4 * s}.", 4 * s, lv)
    q = f"What is {s} squared?"
    return _mk(rng, q, f"{s} squared is {s} * {s} = {s * s}.", s * s, lv)


def _distance(rng: random.Random) -> Example:
    lv, v = _lv(rng), pick(rng, VEHICLES)
    s, t = 5 * rng.randint(2, 4 + 4 * lv), rng.randint(2, 2 + 2 * lv)
    q = f"A {v} travels at {s} km per hour for {t} hours. How many kilometers does it travel?"
    return _mk(rng, q, f"Distance = speed * time = {s} * {t} = {s * t}.", s * t, lv)


def _trip_time(rng: random.Random) -> Example:
    lv, v = _lv(rng), pick(rng, VEHICLES)
    s, t = 5 * rng.randint(2, 4 + 4 * lv), rng.randint(2, 2 + 2 * lv)
    q = f"A {v} covers {s * t} km at {s} km per hour. How many hours does the trip take?"
    return _mk(rng, q, f"Time = distance / speed = {s * t} / {s} = {t}.", t, lv)


def _units(rng: random.Random) -> Example:
    lv = _lv(rng)
    big, small, f = pick(
        rng,
        (
            ("hours", "minutes", 60),
            ("meters", "centimeters", 100),
            ("kilograms", "grams", 1000),
            ("minutes", "seconds", 60),
            ("days", "hours", 24),
            ("weeks", "days", 7),
            ("liters", "milliliters", 1000),
            ("dozens", "items", 12),
        ),
    )
    x = rng.randint(2, 3 + 3 * lv)
    q = f"How many {small} are in {x} {big}?"
    return _mk(rng, q, f"Each of the {big} has {f} {small}, so {x} * {f} = {x * f}.", x * f, lv)


def _leftover(rng: random.Random) -> Example:
    lv, (_, objs), (_, boxes) = _lv(rng), pick(rng, OBJECTS), pick(rng, CONTAINERS)
    b = rng.randint(3, 4 + 2 * lv)
    a = b * rng.randint(2, 3 + 3 * lv) + rng.randint(1, b - 1)
    if rng.random() < 0.5:
        q = f"{a} {objs} are packed into {boxes} of {b}. How many {objs} are left over?"
        w = f"{a} = {b} * {a // b} + {a % b}, so {a % b} are left over."
        return _mk(rng, q, w, a % b, lv)
    q = f"{a} {objs} are packed into {boxes} of {b}. How many {boxes} can be filled completely?"
    w = f"{a} / {b} = {a // b} with remainder {a % b}, so {a // b} are full."
    return _mk(rng, q, w, a // b, lv)


def _ages(rng: random.Random) -> Example:
    lv, (a_name, b_name) = _lv(rng), _two_names(rng)
    a, d = rng.randint(5, 20 + 10 * lv), rng.randint(2, 5 + 5 * lv)
    if rng.random() < 0.5:
        q = f"{a_name} is {a} years old. {b_name} is {d} years older. How old is {b_name}?"
        return _mk(rng, q, f"{b_name} is {a} + {d} = {a + d} years old.", a + d, lv)
    q = f"In {d} years, {a_name} will be {a + d}. How old is {a_name} now?"
    return _mk(rng, q, f"{a_name} is now {a + d} - {d} = {a} years old.", a, lv)


def _times_as_many(rng: random.Random) -> Example:
    lv, (a_name, b_name), (_, objs) = _lv(rng), _two_names(rng), pick(rng, OBJECTS)
    a, k = _n(rng, lv), rng.randint(2, 5)
    q = f"{a_name} has {a} {objs}. {b_name} has {k} times as many. How many {objs} does {b_name} have?"
    return _mk(rng, q, f"{b_name} has {k} * {a} = {k * a}.", k * a, lv)


def _packs_then_give(rng: random.Random) -> Example:
    lv, name, (_, objs) = _lv(rng), pick(rng, NAMES), pick(rng, OBJECTS)
    k, b = rng.randint(2, 3 + 2 * lv), rng.randint(3, 4 + 4 * lv)
    g = rng.randint(1, k * b - 1)
    ans = k * b - g
    q = f"{name} buys {k} packs of {b} {objs} and gives away {g}. How many {objs} are left?"
    w = f"{name} buys {k} * {b} = {k * b} {objs}, then {k * b} - {g} = {ans} remain."
    return _mk(rng, q, w, ans, lv)


def _sequence(rng: random.Random) -> Example:
    lv = _lv(rng)
    a, d = _n(rng, lv), rng.randint(2, 3 * lv + 3) * (1 if rng.random() < 0.8 else -1)
    terms = [a + i * d for i in range(4)]
    q = f"What is the next number in the sequence {', '.join(map(str, terms))}?"
    w = f"Each term changes by {d}, so the next is {terms[-1]} + ({d}) = {terms[-1] + d}."
    return _mk(rng, q, w, terms[-1] + d, lv)


def _fraction_of(rng: random.Random) -> Example:
    lv, name, (_, objs) = _lv(rng), pick(rng, NAMES), pick(rng, OBJECTS)
    word, den = pick(rng, (("half", 2), ("a third", 3), ("a quarter", 4), ("a fifth", 5)))
    x = den * rng.randint(2, 3 + 4 * lv)
    q = f"{name} has {x} {objs} and uses {word} of them. How many {objs} does {name} use?"
    return _mk(rng, q, f"{word.capitalize()} of {x} is {x} / {den} = {x // den}.", x // den, lv)


def _difference(rng: random.Random) -> Example:
    lv, name = _lv(rng), pick(rng, NAMES)
    b = _n(rng, lv)
    a = b + _n(rng, lv)
    q = f"{name} read {a} pages on Monday and {b} on Tuesday. How many more pages on Monday?"
    return _mk(rng, q, f"The difference is {a} - {b} = {a - b}.", a - b, lv)


def _per_day(rng: random.Random) -> Example:
    lv, name = _lv(rng), pick(rng, NAMES)
    p, d = _n(rng, lv), rng.randint(2, 10)
    act, unit = pick(
        rng,
        (
            ("reads", "pages"),
            ("runs", "kilometers"),
            ("writes", "lines"),
            ("walks", "blocks"),
            ("practices", "minutes"),
        ),
    )
    q = f"{name} {act} {p} {unit} a day for {d} days. How many {unit} is that in total?"
    return _mk(rng, q, f"{p} {unit} a day for {d} days: {p} * {d} = {p * d}.", p * d, lv)


def _savings_weeks(rng: random.Random) -> Example:
    lv, name, item = _lv(rng), pick(rng, NAMES), pick(rng, ITEMS_FOR_SALE)
    s, w = rng.randint(2, 5 * lv + 5), rng.randint(2, 4 + 2 * lv)
    q = f"{name} saves ${s} each week to buy a {item} that costs ${s * w}. How many weeks?"
    return _mk(rng, q, f"{s * w} / {s} = {w} weeks.", w, lv)


def _order_of_ops(rng: random.Random) -> Example:
    lv = _lv(rng)
    a, b, c = _n(rng, lv), rng.randint(2, 9), rng.randint(2, 9)
    if rng.random() < 0.5:
        q = f"Compute {a} + {b} * {c}."
        w = f"Multiplication first: {b} * {c} = {b * c}, then {a} + {b * c} = {a + b * c}."
        return _mk(rng, q, w, a + b * c, lv)
    q = f"Compute ({a} + {b}) * {c}."
    w = f"Parentheses first: {a} + {b} = {a + b}, then {a + b} * {c} = {(a + b) * c}."
    return _mk(rng, q, w, (a + b) * c, lv)


def _temperature(rng: random.Random) -> Example:
    lv = _lv(rng)
    t = pick(rng, [x for x in range(-5, 11 + 5 * lv) if abs(x) != 1])  # no '1 degrees'
    d = rng.randint(2, 8 + 4 * lv)
    q = f"The temperature was {t} degrees this morning and dropped by {d} degrees. What is it now?"
    return _mk(rng, q, f"{t} - {d} = {t - d} degrees.", t - d, lv)


def _legs(rng: random.Random) -> Example:
    lv = _lv(rng)
    c, w = rng.randint(1, 5 + 5 * lv), rng.randint(1, 5 + 5 * lv)
    ans = 2 * c + 4 * w
    q = f"A farm has {c} chickens and {w} cows. How many legs do they have altogether?"
    w_ = f"Chickens: {c} * 2 = {2 * c}. Cows: {w} * 4 = {4 * w}. Total: {2 * c} + {4 * w} = {ans}."
    return _mk(rng, q, w_, ans, lv)


def _tickets(rng: random.Random) -> Example:
    lv = _lv(rng)
    pa, pc = rng.randint(6, 10 + 5 * lv), rng.randint(2, 5 + 2 * lv)
    x, y = rng.randint(1, 4), rng.randint(1, 5)
    ans = x * pa + y * pc
    q = (
        f"Adult tickets cost ${pa} and child tickets cost ${pc}. "
        f"How many dollars for {x} adults and {y} children?"
    )
    w = f"Adults: {x} * {pa} = {x * pa}. Children: {y} * {pc} = {y * pc}. Total: {fmt_num(ans)}."
    return _mk(rng, q, w, ans, lv)


def _double_half(rng: random.Random) -> Example:
    lv = _lv(rng)
    x = 2 * _n(rng, lv)
    if rng.random() < 0.5:
        return _mk(rng, f"What is double {x}?", f"Double {x} is 2 * {x} = {2 * x}.", 2 * x, lv)
    return _mk(rng, f"What is half of {x}?", f"Half of {x} is {x} / 2 = {x // 2}.", x // 2, lv)


TEMPLATES = (
    _add_more,
    _give_away,
    _groups,
    _share,
    _price_total,
    _change,
    _percent_of,
    _discount,
    _average,
    _rect_area,
    _rect_perimeter,
    _square,
    _distance,
    _trip_time,
    _units,
    _leftover,
    _ages,
    _times_as_many,
    _packs_then_give,
    _sequence,
    _fraction_of,
    _difference,
    _per_day,
    _savings_weeks,
    _order_of_ops,
    _temperature,
    _legs,
    _tickets,
    _double_half,
)


def generate(rng: random.Random) -> Example:
    return choose_template(rng, TEMPLATES)
