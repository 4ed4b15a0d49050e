"""General tasks about output format: lists, case, JSON, length limits."""

from __future__ import annotations

import json
import random

from repcollapse.train.data.common import Example, join_list, pick, sample
from repcollapse.train.data.general_common import exact, mk, sentence
from repcollapse.train.data.vocab import (
    ADJECTIVES,
    CATEGORIES,
    CATEGORY_NAMES,
    COUNTRIES,
    NAMES,
    TOPICS,
    WORDS,
)


def _list_n(rng: random.Random) -> Example:
    cat = pick(rng, CATEGORY_NAMES)
    n = rng.randint(2, 6)
    items = [w.capitalize() for w in sample(rng, CATEGORIES[cat], n)]
    style = rng.randrange(3)
    if style == 0:
        return mk(
            f"List exactly {n} {cat}, one per line.",
            "\n".join(items),
            [{"type": "line_count", "n": n}, {"type": "distinct_lines"}],
        )
    if style == 1:
        resp = "\n".join(f"{i}. {x}" for i, x in enumerate(items, start=1))
        return mk(
            f"Give a numbered list of exactly {n} {cat}.",
            resp,
            [{"type": "line_count", "n": n}, {"type": "distinct_lines"}],
        )
    resp = "\n".join(f"- {x.upper()}" for x in items)
    return mk(
        f"Write a bulleted list of {n} {cat}, all in uppercase.",
        resp,
        [{"type": "line_count", "n": n}, {"type": "distinct_lines"}, {"type": "all_upper"}],
        2,
    )


def _uppercase(rng: random.Random) -> Example:
    s = sentence(rng) + "."
    return mk(
        f"Rewrite this sentence in uppercase: {s}",
        s.upper(),
        [exact(s.upper(), True), {"type": "all_upper"}],
    )


def _lowercase(rng: random.Random) -> Example:
    s = sentence(rng).upper() + "."
    return mk(
        f"Convert this text to lowercase: {s}",
        s.lower(),
        [exact(s.lower(), True), {"type": "all_lower"}],
    )


def _repeat(rng: random.Random) -> Example:
    w, n = pick(rng, WORDS), rng.randint(2, 6)
    out = " ".join([w] * n)
    return mk(
        f"Repeat the word '{w}' exactly {n} times, separated by spaces.",
        out,
        [exact(out), {"type": "word_count", "n": n}],
    )


def _sentence_with_word(rng: random.Random) -> Example:
    topic, w = pick(rng, TOPICS), pick(rng, WORDS)
    frame = pick(
        rng,
        (
            "Thinking about {t} always reminds me of a {w} I once saw.",
            "A story about {t} could begin with a single {w}.",
            "My favorite thing about {t} is the {w} that comes with it.",
            "On a day full of {t}, even a {w} can feel special.",
        ),
    )
    resp = frame.format(t=topic, w=w)
    return mk(
        f"Write one sentence about {topic} that uses the word '{w}'.",
        resp,
        [
            {"type": "contains", "value": w},
            {"type": "ends_with", "value": "."},
            {"type": "line_count", "n": 1},
        ],
        2,
    )


def _title(rng: random.Random) -> Example:
    topic, n = pick(rng, TOPICS), rng.randint(3, 6)
    adj = pick(rng, ADJECTIVES).capitalize()
    core = topic.removeprefix("the ").removeprefix("a ").title()
    frames = ("{c}", "{a} {c}", "The {a} {c}", "Notes on {c}", "A Story of {c}",
              "The Secret of {c}", "Where {c} Begins")  # fmt: skip
    titles = [f.format(a=adj, c=core) for f in frames]
    title = pick(rng, [t for t in titles if len(t.split()) <= n])
    return mk(
        f"Suggest a title of at most {n} words for a story about {topic}.",
        title,
        [{"type": "max_words", "n": n}, {"type": "line_count", "n": 1}],
        2,
    )


def _json(rng: random.Random) -> Example:
    key = pick(rng, ("name", "city", "color", "animal", "word", "count"))
    value: str | int = (
        rng.randint(1, 99)
        if key == "count"
        else pick(
            rng,
            {
                "name": NAMES,
                "city": [c[1] for c in COUNTRIES],
                "color": CATEGORIES["colors"],
                "animal": CATEGORIES["animals"],
                "word": WORDS,
            }[key],
        )
    )
    resp = json.dumps({key: value})
    return mk(
        f'Return only a JSON object with the key "{key}" set to {json.dumps(value)}.',
        resp,
        [{"type": "json_object", "keys": {key: value}}],
        2,
    )


def _capitalize_each(rng: random.Random) -> Example:
    s = sentence(rng).lower()
    out = " ".join(x.capitalize() for x in s.split())
    return mk(f"Capitalize the first letter of every word: {s}", out, [exact(out, True)])


def _capital_upper(rng: random.Random) -> Example:
    country, capital, _ = pick(rng, COUNTRIES)
    return mk(
        f"What is the capital of {country}? Answer in uppercase letters only.",
        capital.upper(),
        [exact(capital), {"type": "all_upper"}],
    )


def _list_starting(rng: random.Random) -> Example:
    letters = sorted({w[0] for w in WORDS if sum(1 for x in WORDS if x[0] == w[0]) >= 3})
    letter = pick(rng, letters)
    pool = [w for w in WORDS if w[0] == letter]
    n = rng.randint(2, min(4, len(pool)))
    out = "\n".join(sample(rng, pool, n))
    return mk(
        f"List exactly {n} different words that start with the letter '{letter}', one per line.",
        out,
        [
            {"type": "line_count", "n": n},
            {"type": "distinct_lines"},
            {"type": "lines_start_with", "letter": letter},
        ],
        2,
    )


def _names_list(rng: random.Random) -> Example:
    ns = sample(rng, NAMES, rng.randint(3, 5))
    out = join_list(sorted(ns))
    return mk(
        f"Put these names in alphabetical order and write them as a sentence list "
        f"(like 'A, B and C'): {', '.join(ns)}",
        out,
        [exact(out)],
        2,
    )


TEMPLATES = (
    _list_n,
    _uppercase,
    _lowercase,
    _repeat,
    _sentence_with_word,
    _title,
    _json,
    _capitalize_each,
    _capital_upper,
    _list_starting,
    _names_list,
)
