"""The probe corpus: ``probe_per_domain`` examples for each of the six domains, with spans,
plus a user's own probe records in any other domains (``build_probe(extra=...)``).

Spans are character offsets into the reference. Every reference is split into
``early_response`` / ``late_response`` halves at a word boundary; math and long_cot add a
``cot`` span over the reasoning before ``Answer:``, harmful safety prompts a ``refusal``
span over the refusal sentence. Overlaps are intended: extract labels each token with the
finest span (``SPAN_PRIORITY``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from repcollapse.store_schema.problems import Problem, SchemaError
from repcollapse.store_schema.records import DOMAINS, ProbeRecord, Span, domain_order
from repcollapse.train.data import (
    code_tasks,
    factual_tasks,
    general_tasks,
    long_cot_tasks,
    math_tasks,
    safety_tasks,
)
from repcollapse.train.data.common import GENERATOR_SOURCE, LICENSE, Example
from repcollapse.train.data.real.common import text_key

IndexedGenerator = Callable[[random.Random, int], Example]


def _plain(module: object) -> IndexedGenerator:
    gen = module.generate  # type: ignore[attr-defined]
    return lambda rng, _i: gen(rng)


def _safety(rng: random.Random, i: int) -> Example:
    # Alternate so that every split is exactly balanced between harmful and benign.
    return safety_tasks.harmful(rng) if i % 2 == 0 else safety_tasks.benign(rng)


GENERATORS: dict[str, IndexedGenerator] = {
    "general": _plain(general_tasks),
    "math": _plain(math_tasks),
    "code": _plain(code_tasks),
    "safety": _safety,
    "long_cot": _plain(long_cot_tasks),
    "factual": _plain(factual_tasks),
}


def _at_least(gen: IndexedGenerator, chars: int) -> IndexedGenerator:
    """Redraw until the response has ``chars`` characters: many general tasks answer with one
    word, which would leave the probe's response spans a token or two long."""

    def draw(rng: random.Random, i: int) -> Example:
        while True:
            ex = gen(rng, i)
            if len(ex.response) >= chars:
                return ex

    return draw


PROBE_GENERATORS: dict[str, IndexedGenerator] = {
    **GENERATORS,
    "general": _at_least(GENERATORS["general"], 24),
}


def stream_rng(seed: int, *parts: str) -> random.Random:
    """A private generator per (seed, stream): string seeds hash with sha512 in CPython, so
    they do not depend on PYTHONHASHSEED, and streams are independent of each other's sizes."""
    return random.Random(":".join(("repcollapse", str(seed), *parts)))


def unique_examples(
    gen: IndexedGenerator, rng: random.Random, n: int, seen: dict[str, str], where: str
) -> list[Example]:
    """n examples whose prompts are new to ``seen`` (normalised-text key -> first place it was
    used): prompts differing only in case or spacing count as the same prompt, so real data
    sets with near-duplicates cannot leak one copy into another split."""
    out: list[Example] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 100:
            raise RuntimeError(
                f"{where}: found only {len(out)} distinct prompts of {n} requested; "
                f"ask for fewer examples"
            )
        ex = gen(rng, len(out))
        key = text_key(ex.prompt)
        if key in seen:
            continue
        seen[key] = where
        out.append(ex)
    return out


def halves(reference: str) -> tuple[Span, ...]:
    """early/late response spans, cut at the word boundary nearest the middle."""
    n = len(reference)
    if n < 2:
        return (Span("early_response", 0, n),) if n else ()
    mid = n // 2
    left = max(reference.rfind(" ", 0, mid), reference.rfind("\n", 0, mid))
    right_candidates = [i for i in (reference.find(" ", mid), reference.find("\n", mid)) if i >= 0]
    right = min(right_candidates) if right_candidates else -1
    options = [i + 1 for i in (left, right) if 0 <= i < n - 1]
    cut = min(options, key=lambda c: abs(c - mid)) if options else mid
    return (Span("early_response", 0, cut), Span("late_response", cut, n))


def probe_record(domain: str, index: int, ex: Example) -> ProbeRecord:
    spans = halves(ex.response) + tuple(Span(name, s, e) for name, s, e in ex.marks if s < e)
    return ProbeRecord(
        id=f"probe-{domain}-{index:04d}",
        domain=domain,
        prompt=ex.prompt,
        reference=ex.response,
        spans=spans,
        source=record_source(ex),
        license=record_license(ex),
    )


def record_source(ex: Example) -> str:
    """One string for the probe record: 'prompt: X; response: generated' when they differ."""
    src = ex.source or GENERATOR_SOURCE
    return f"prompt: {src}; response: {ex.response_source}" if ex.response_source else src


def record_license(ex: Example) -> str:
    lic = ex.license or LICENSE
    return f"prompt: {lic}; response: {LICENSE}" if ex.response_source else lic


def build_probe(
    seed: int,
    per_domain: int,
    seen: dict[str, str],
    generators: dict[str, IndexedGenerator] | None = None,
    extra: Sequence[ProbeRecord] = (),
) -> list[ProbeRecord]:
    """The probe corpus, sorted by (domain order, id); fills ``seen`` with its prompts.

    ``extra``: a user's own probe records (e.g. a ``medical`` domain, or more records of a paper
    domain), added after the generated ones so that the generated bytes do not change. A user
    prompt that is already in the corpus, or an id that is, is an error naming both places."""
    records: list[ProbeRecord] = []
    for domain in DOMAINS:
        rng = stream_rng(seed, "probe", domain)
        gen = (generators or PROBE_GENERATORS)[domain]
        examples = unique_examples(gen, rng, per_domain, seen, f"probe/{domain}")
        records.extend(probe_record(domain, i, ex) for i, ex in enumerate(examples))
    ids = {r.id for r in records}
    problems: list[Problem] = []
    for rec in extra:
        key = text_key(rec.prompt)
        where = f"probe_extra record {rec.id!r}"
        if rec.id in ids:
            problems.append(
                Problem(where, "expected a new id, found one already used", "duplicate")
            )
        elif key in seen:
            problems.append(
                Problem(where, f"expected a new prompt, found one used in {seen[key]}", "duplicate")
            )
        else:
            seen[key] = f"probe/{rec.domain}"
            ids.add(rec.id)
            records.append(rec)
    if problems:
        raise SchemaError(problems, "user probe records clash with the corpus")
    order = {d: i for i, d in enumerate(domain_order(r.domain for r in records))}
    return sorted(records, key=lambda r: (order[r.domain], r.id))
