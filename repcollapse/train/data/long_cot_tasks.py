"""Multi-step word problems answered with explicit numbered reasoning, then ``Answer: X``.

Responses are deliberately longer than the math pool (three to six steps) so that a stage
trained on them learns to "think out loud"; the scorer requires the reasoning to be present.
"""

from __future__ import annotations

import random

from repcollapse.train.data.common import Example, answer_marks, choose_template, pick, plural
from repcollapse.train.data.vocab import ITEMS_FOR_SALE, NAMES, OBJECTS, VEHICLES

INSTRUCTIONS = (
    " Think step by step, then give the final answer on a line starting with 'Answer:'.",
    " Reason through it step by step before answering.",
    " Work it out carefully, one step at a time.",
    " Explain your reasoning in steps, then write 'Answer: <number>'.",
    " Let's think step by step.",
)
OPENERS = (
    "Let's work through this step by step.",
    "Let's think step by step.",
    "I'll solve this one step at a time.",
    "Let's break the problem into steps.",
)


def _names(rng: random.Random, k: int) -> list[str]:
    return [NAMES[i] for i in rng.sample(range(len(NAMES)), k)]


def _mk(rng: random.Random, question: str, steps: list[str], answer: int, lv: int) -> Example:
    lines = [pick(rng, OPENERS)]
    lines += [f"Step {i}: {s}" for i, s in enumerate(steps, start=1)]
    lines.append(f"So the answer is {answer}.")
    response = "\n".join(lines) + f"\nAnswer: {answer}"
    prompt = question + pick(rng, INSTRUCTIONS)
    return Example(prompt, response, {"answer": str(answer), "level": lv}, answer_marks(response))


def _shopping(rng: random.Random) -> Example:
    lv, name = rng.randint(1, 3), pick(rng, NAMES)
    i1, i2 = (ITEMS_FOR_SALE[i] for i in rng.sample(range(len(ITEMS_FOR_SALE)), 2))
    x, p, y, q_ = (
        rng.randint(2, 2 + lv),
        rng.randint(2, 6 * lv),
        rng.randint(1, 3),
        rng.randint(3, 8 * lv),
    )
    total = x * p + y * q_
    bill = next(b for b in (20, 50, 100, 200, 500) if b > total)
    q = (
        f"{name} buys {x} {plural(i1, x)} at ${p} each and {y} {plural(i2, y)} at ${q_} each, "
        f"paying with a ${bill} bill. How much change does {name} get, in dollars?"
    )
    steps = [
        f"The {plural(i1, x)} cost {x} * {p} = {x * p} dollars.",
        f"The {plural(i2, y)} cost {y} * {q_} = {y * q_} dollars.",
        f"The total is {x * p} + {y * q_} = {total} dollars.",
        f"The change is {bill} - {total} = {bill - total} dollars.",
    ]
    return _mk(rng, q, steps, bill - total, lv)


def _recipe(rng: random.Random) -> Example:
    lv = rng.randint(1, 3)
    s, f = rng.randint(2, 4), rng.randint(2, 2 + lv)
    flour, sugar = rng.randint(1, 3 + lv), rng.randint(1, 2 + lv)
    t = s * f
    ans = (flour + sugar) * f
    q = (
        f"A recipe for {s} servings uses {flour} cups of flour and {sugar} cups of sugar. "
        f"How many cups of flour and sugar together are needed for {t} servings?"
    )
    steps = [
        f"{t} servings is {t} / {s} = {f} times the recipe.",
        f"Flour: {flour} * {f} = {flour * f} cups.",
        f"Sugar: {sugar} * {f} = {sugar * f} cups.",
        f"Together: {flour * f} + {sugar * f} = {ans} cups.",
    ]
    return _mk(rng, q, steps, ans, lv)


def _twice_as_old(rng: random.Random) -> Example:
    lv = rng.randint(1, 3)
    a_name, b_name = _names(rng, 2)
    b, k = rng.randint(3, 10 + 5 * lv), rng.randint(2, 9)
    m = rng.randint(2, 3)
    word = {2: "twice", 3: "three times"}[m]
    q = (
        f"{a_name} is {word} as old as {b_name}. In {k} years, {b_name} will be {b + k}. "
        f"How old is {a_name} now?"
    )
    steps = [
        f"In {k} years {b_name} will be {b + k}, so {b_name} is {b + k} - {k} = {b} now.",
        f"{a_name} is {word} as old: {m} * {b} = {m * b}.",
    ]
    return _mk(rng, q, steps, m * b, lv)


def _work_together(rng: random.Random) -> Example:
    lv = rng.randint(1, 3)
    a_name, b_name = _names(rng, 2)
    r1, r2, h = rng.randint(2, 5 + 3 * lv), rng.randint(2, 5 + 3 * lv), rng.randint(2, 3 + 2 * lv)
    n = (r1 + r2) * h
    q = (
        f"{a_name} packs {r1} boxes per hour and {b_name} packs {r2} boxes per hour. "
        f"Working together, how many hours do they need to pack {n} boxes?"
    )
    steps = [
        f"Together they pack {r1} + {r2} = {r1 + r2} boxes per hour.",
        f"The time needed is {n} / {r1 + r2} = {h} hours.",
    ]
    return _mk(rng, q, steps, h, lv)


def _save_spend(rng: random.Random) -> Example:
    lv, name = rng.randint(1, 3), pick(rng, NAMES)
    s, e, w = rng.randint(5, 20 * lv), rng.randint(10, 15 * lv + 10), rng.randint(3, 4 + 2 * lv)
    x = rng.randint(1, e - 1)
    ans = s + (e - x) * w
    q = (
        f"{name} has ${s}, earns ${e} each week and spends ${x} each week. "
        f"How many dollars will {name} have after {w} weeks?"
    )
    steps = [
        f"Each week {name} keeps {e} - {x} = {e - x} dollars.",
        f"Over {w} weeks that is {e - x} * {w} = {(e - x) * w} dollars.",
        f"Adding the starting money: {s} + {(e - x) * w} = {ans} dollars.",
    ]
    return _mk(rng, q, steps, ans, lv)


def _trains_meet(rng: random.Random) -> Example:
    lv = rng.randint(1, 3)
    v1, v2 = (pick(rng, VEHICLES) for _ in range(2))
    s1, s2, t = 10 * rng.randint(3, 5 + lv), 10 * rng.randint(3, 5 + lv), rng.randint(2, 2 + 2 * lv)
    d = (s1 + s2) * t
    q = (
        f"A {v1} and a {v2} start {d} km apart and drive toward each other at {s1} km/h and "
        f"{s2} km/h. After how many hours do they meet?"
    )
    steps = [
        f"They close the gap at {s1} + {s2} = {s1 + s2} km per hour.",
        f"The gap is {d} km, so they meet after {d} / {s1 + s2} = {t} hours.",
    ]
    return _mk(rng, q, steps, t, lv)


def _discount_coupon(rng: random.Random) -> Example:
    lv, item = rng.randint(1, 3), pick(rng, ITEMS_FOR_SALE)
    pct = pick(rng, (10, 20, 25, 50))
    p = 20 * rng.randint(2, 3 + 3 * lv)
    off = p * pct // 100
    c = rng.randint(1, 5 * lv)
    ans = p - off - c
    q = (
        f"A {item} costs ${p}. It is discounted by {pct}%, and then a ${c} coupon is applied. "
        f"What is the final price in dollars?"
    )
    steps = [
        f"The discount is {pct}% of {p} = {off} dollars.",
        f"After the discount the price is {p} - {off} = {p - off} dollars.",
        f"After the coupon it is {p - off} - {c} = {ans} dollars.",
    ]
    return _mk(rng, q, steps, ans, lv)


def _missing_score(rng: random.Random) -> Example:
    lv, name = rng.randint(1, 3), pick(rng, NAMES)
    m = rng.randint(70, 90)
    a, b, c = (m + rng.randint(-8, 8) for _ in range(3))
    need = 4 * m - (a + b + c)
    q = (
        f"{name} scored {a}, {b} and {c} on three tests. What score on the fourth test makes "
        f"the average of all four exactly {m}?"
    )
    steps = [
        f"An average of {m} over 4 tests needs a total of 4 * {m} = {4 * m}.",
        f"The first three add up to {a} + {b} + {c} = {a + b + c}.",
        f"The fourth test needs {4 * m} - {a + b + c} = {need}.",
    ]
    return _mk(rng, q, steps, need, lv)


def _inventory(rng: random.Random) -> Example:
    lv, (_, objs) = rng.randint(1, 3), pick(rng, OBJECTS)
    x = rng.randint(40, 100 * lv)
    a, b = rng.randint(5, x // 3), rng.randint(5, x // 3)
    c = rng.randint(10, 20 * lv + 10)
    ans = x - a - b + c
    q = (
        f"A shop has {x} {objs}. It sells {a} on Monday and {b} on Tuesday, then receives a "
        f"delivery of {c}. How many {objs} does it have now?"
    )
    steps = [
        f"After Monday: {x} - {a} = {x - a}.",
        f"After Tuesday: {x - a} - {b} = {x - a - b}.",
        f"After the delivery: {x - a - b} + {c} = {ans}.",
    ]
    return _mk(rng, q, steps, ans, lv)


def _garden(rng: random.Random) -> Example:
    lv, name = rng.randint(1, 3), pick(rng, NAMES)
    r, p = rng.randint(2, 4 + 2 * lv), rng.randint(3, 5 + 2 * lv)
    k, j = rng.randint(2, r * p // 2), rng.randint(2, 10 * lv)
    ans = r * p - k + j
    q = (
        f"{name}'s garden has {r} rows of {p} plants. {k} plants die, and then {name} plants "
        f"{j} new ones. How many plants are in the garden now?"
    )
    steps = [
        f"At first there are {r} * {p} = {r * p} plants.",
        f"After {k} die: {r * p} - {k} = {r * p - k}.",
        f"After planting {j}: {r * p - k} + {j} = {ans}.",
    ]
    return _mk(rng, q, steps, ans, lv)


def _two_legs(rng: random.Random) -> Example:
    lv, v = rng.randint(1, 3), pick(rng, VEHICLES)
    s1, t1, s2, t2 = (
        10 * rng.randint(2, 6 + lv),
        rng.randint(1, 2 + lv),
        10 * rng.randint(2, 6 + lv),
        rng.randint(1, 2 + lv),
    )
    ans = s1 * t1 + s2 * t2
    q = (
        f"A {v} drives at {s1} km/h for {t1} hours, then at {s2} km/h for {t2} hours. "
        f"How many kilometers does it travel in total?"
    )
    steps = [
        f"First part: {s1} * {t1} = {s1 * t1} km.",
        f"Second part: {s2} * {t2} = {s2 * t2} km.",
        f"Total: {s1 * t1} + {s2 * t2} = {ans} km.",
    ]
    return _mk(rng, q, steps, ans, lv)


def _book_days(rng: random.Random) -> Example:
    lv, name = rng.randint(1, 3), pick(rng, NAMES)
    a, d, b, e = (
        rng.randint(5, 10 * lv + 5),
        rng.randint(2, 5),
        rng.randint(5, 10 * lv + 5),
        rng.randint(2, 6),
    )
    n = a * d + b * e
    q = (
        f"A book has {n} pages. {name} reads {a} pages a day for {d} days, then {b} pages a day. "
        f"How many more days does {name} need to finish the book?"
    )
    steps = [
        f"In the first {d} days {name} reads {a} * {d} = {a * d} pages.",
        f"Pages left: {n} - {a * d} = {n - a * d}.",
        f"At {b} pages a day that takes {n - a * d} / {b} = {e} days.",
    ]
    return _mk(rng, q, steps, e, lv)


def _consecutive(rng: random.Random) -> Example:
    lv = rng.randint(1, 3)
    x = rng.randint(1, 30 * lv)
    s = 3 * x + 3
    q = f"The sum of three consecutive integers is {s}. What is the largest of them?"
    steps = [
        "Call the smallest n; the three numbers are n, n + 1 and n + 2.",
        f"Their sum is 3n + 3 = {s}, so 3n = {s - 3} and n = {x}.",
        f"The largest is n + 2 = {x + 2}.",
    ]
    return _mk(rng, q, steps, x + 2, lv)


def _ratio_split(rng: random.Random) -> Example:
    lv = rng.randint(1, 3)
    a_name, b_name, c_name = _names(rng, 3)
    ra, rb, rc = rng.randint(1, 4), rng.randint(1, 4), rng.randint(1, 5)
    unit = rng.randint(2, 5 * lv + 5)
    total = (ra + rb + rc) * unit
    q = (
        f"{a_name}, {b_name} and {c_name} share ${total} in the ratio {ra}:{rb}:{rc}. "
        f"How many dollars does {c_name} get?"
    )
    steps = [
        f"There are {ra} + {rb} + {rc} = {ra + rb + rc} parts.",
        f"One part is {total} / {ra + rb + rc} = {unit} dollars.",
        f"{c_name} gets {rc} parts: {rc} * {unit} = {rc * unit} dollars.",
    ]
    return _mk(rng, q, steps, rc * unit, lv)


def _fence(rng: random.Random) -> Example:
    lv = rng.randint(1, 3)
    w, h, c = rng.randint(3, 10 * lv), rng.randint(3, 10 * lv), rng.randint(2, 4 + 2 * lv)
    per = 2 * (w + h)
    q = (
        f"A rectangular field is {w} m wide and {h} m long. Fencing costs ${c} per meter. "
        f"How many dollars does it cost to fence the whole field?"
    )
    steps = [
        f"The perimeter is 2 * ({w} + {h}) = {per} m.",
        f"The cost is {per} * {c} = {per * c} dollars.",
    ]
    return _mk(rng, q, steps, per * c, lv)


def _tank(rng: random.Random) -> Example:
    lv = rng.randint(1, 3)
    b = rng.randint(1, 4)
    a = b + rng.randint(1, 3 + lv)
    t = rng.randint(3, 8 + 4 * lv)
    cap = (a - b) * t
    q = (
        f"A tank holds {cap} liters. A pipe fills it at {a} liters per minute while a leak drains "
        f"{b} liters per minute. Starting empty, how many minutes until the tank is full?"
    )
    steps = [
        f"The tank gains {a} - {b} = {a - b} liters per minute.",
        f"Filling {cap} liters takes {cap} / {a - b} = {t} minutes.",
    ]
    return _mk(rng, q, steps, t, lv)


def _cookie_bags(rng: random.Random) -> Example:
    lv, name = rng.randint(1, 3), pick(rng, NAMES)
    k, bags, batches = rng.randint(3, 6 + lv), rng.randint(2, 4 + 2 * lv), rng.randint(2, 4)
    # Round the batch size up so that a few cookies (1..batches) are left to eat.
    per_batch = (k * bags) // batches + 1
    total = batches * per_batch
    e = total - k * bags
    q = (
        f"{name} bakes {batches} batches of {per_batch} cookies, eats {e}, and packs the rest "
        f"into bags of {k}. How many bags does {name} fill?"
    )
    steps = [
        f"{name} bakes {batches} * {per_batch} = {total} cookies.",
        f"After eating {e}, {total} - {e} = {total - e} remain.",
        f"Bags of {k}: {total - e} / {k} = {bags}.",
    ]
    return _mk(rng, q, steps, bags, lv)


def _more_than_twice(rng: random.Random) -> Example:
    lv = rng.randint(1, 3)
    a_name, b_name = _names(rng, 2)
    (_, objs) = pick(rng, OBJECTS)
    b, k = rng.randint(3, 10 * lv), rng.randint(1, 9)
    a = 2 * b + k
    q = (
        f"{a_name} has {k} more than twice as many {objs} as {b_name}. Together they have "
        f"{a + b}. How many {objs} does {a_name} have?"
    )
    steps = [
        f"If {b_name} has n, {a_name} has 2n + {k}.",
        f"Together: n + 2n + {k} = 3n + {k} = {a + b}.",
        f"So 3n = {a + b - k} and n = {b}.",
        f"{a_name} has 2 * {b} + {k} = {a}.",
    ]
    return _mk(rng, q, steps, a, lv)


TEMPLATES = (
    _shopping,
    _recipe,
    _twice_as_old,
    _work_together,
    _save_spend,
    _trains_meet,
    _discount_coupon,
    _missing_score,
    _inventory,
    _garden,
    _two_legs,
    _book_days,
    _consecutive,
    _ratio_split,
    _fence,
    _tank,
    _cookie_bags,
    _more_than_twice,
)


def generate(rng: random.Random) -> Example:
    return choose_template(rng, TEMPLATES)
