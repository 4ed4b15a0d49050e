"""The probe record format shared by train, extract and analyze (manifests: store_schema.manifest).

A probe record is one line of ``probe.jsonl``::

    {"id": "math-0007", "domain": "math", "prompt": "...", "reference": "...",
     "spans": [{"name": "cot", "start": 0, "end": 120}, ...],
     "source": "repcollapse-generator/1", "license": "Apache-2.0"}

Span offsets are character offsets into ``reference`` (half-open). The prompt span is implicit:
every token before the reference (chat-template tokens included) is labelled ``prompt``.
A reference token gets the finest named span that covers it (``SPAN_PRIORITY``); a reference
token covered by none is labelled ``response``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from repcollapse.store_schema.problems import Problem, SchemaError

DOMAINS: tuple[str, ...] = ("general", "math", "code", "safety", "long_cot", "factual")
"""The six paper probe domains, the default set, in store order. Domains are an open set: a
user's probe may add its own (``is_domain_name``), stored after these (``domain_order``)."""

_DOMAIN_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
DOMAIN_NAME_RULE = "a name of lowercase letters, digits and '_' starting with a letter (<= 40)"


def is_domain_name(name: object) -> bool:
    """Whether ``name`` can be a probe domain: a short lowercase identifier, so that it is a
    safe label in the store, in table columns and in file names."""
    return isinstance(name, str) and _DOMAIN_NAME.fullmatch(name) is not None


def domain_order(domains: Iterable[str]) -> tuple[str, ...]:
    """Store order of domains: the six paper domains first (always, present or not, so that a
    paper domain's position and every seed derived from it do not change when a user adds one),
    then the other domains found in ``domains``, sorted by name."""
    extra = sorted(set(domains) - set(DOMAINS))
    return (*DOMAINS, *extra)


REFERENCE_SPANS: tuple[str, ...] = ("early_response", "late_response", "cot", "refusal")
"""Span names a probe record may annotate inside its reference."""

SPANS: tuple[str, ...] = ("prompt", "early_response", "late_response", "cot", "refusal", "response")
"""Every token span label, in store order (``response``: reference token in no named span)."""

SPAN_PRIORITY: tuple[str, ...] = ("refusal", "cot", "early_response", "late_response")
"""Finest first: a token covered by several spans gets the first of these."""

STAGE_KINDS: tuple[str, ...] = ("base", "sft", "dpo", "full", "refresh")


@dataclass(frozen=True)
class Span:
    name: str
    start: int
    end: int


@dataclass(frozen=True)
class ProbeRecord:
    id: str
    domain: str
    prompt: str
    reference: str
    spans: tuple[Span, ...] = ()
    source: str = ""
    license: str = ""

    def to_json(self) -> str:
        d = asdict(self)
        d["spans"] = [asdict(s) for s in self.spans]
        return json.dumps(d, ensure_ascii=False, sort_keys=True)


def validate_probe_record(obj: Any, location: str = "record") -> list[Problem]:
    """Every problem with one probe record given as a parsed JSON object."""
    if not isinstance(obj, Mapping):
        return [
            Problem(location, f"expected a JSON object, found {type(obj).__name__}", "wrong_type")
        ]
    problems: list[Problem] = []
    for key in ("id", "domain", "prompt", "reference", "source", "license"):
        if key not in obj:
            problems.append(
                Problem(f"{location} field '{key}'", "missing required field", "missing_field")
            )
        elif not isinstance(obj[key], str):
            found = type(obj[key]).__name__
            problems.append(
                Problem(
                    f"{location} field '{key}'", f"expected a string, found {found}", "wrong_type"
                )
            )
    if isinstance(obj.get("id"), str) and not obj["id"]:
        problems.append(
            Problem(f"{location} field 'id'", "expected a non-empty string, found ''", "bad_value")
        )
    domain = obj.get("domain")
    if isinstance(domain, str) and not is_domain_name(domain):
        problems.append(
            Problem(
                f"{location} field 'domain'",
                f"expected {DOMAIN_NAME_RULE} (e.g. one of {list(DOMAINS)} or your own, "
                f"such as 'medical'), found {domain!r}",
                "bad_value",
            )
        )
    ref = obj.get("reference")
    if isinstance(ref, str) and not ref.strip():
        problems.append(
            Problem(
                f"{location} field 'reference'", "expected non-empty text, found blank", "bad_value"
            )
        )
    spans = obj.get("spans", [])
    if not isinstance(spans, list):
        problems.append(
            Problem(
                f"{location} field 'spans'",
                f"expected a list, found {type(spans).__name__}",
                "wrong_type",
            )
        )
        spans = []
    ref_len = len(ref) if isinstance(ref, str) else None
    for i, span in enumerate(spans):
        where = f"{location} field 'spans[{i}]'"
        if not isinstance(span, Mapping) or not {"name", "start", "end"} <= set(span):
            problems.append(
                Problem(where, f"expected {{name, start, end}}, found {span!r}", "wrong_type")
            )
            continue
        if span["name"] not in REFERENCE_SPANS:
            problems.append(
                Problem(
                    where,
                    f"expected name in {list(REFERENCE_SPANS)}, found {span['name']!r}",
                    "bad_value",
                )
            )
        start, end = span["start"], span["end"]
        if isinstance(start, bool) or isinstance(end, bool):
            # bool is an int subclass: true/false would pass as offsets 1/0.
            problems.append(
                Problem(
                    where,
                    f"expected integer offsets, found bool start={start!r} end={end!r}",
                    "wrong_type",
                )
            )
        elif not (isinstance(start, int) and isinstance(end, int)) or not 0 <= start < end:
            problems.append(
                Problem(
                    where,
                    f"expected integers 0 <= start < end, found {start!r}..{end!r}",
                    "bad_value",
                )
            )
        elif ref_len is not None and end > ref_len:
            problems.append(
                Problem(
                    where, f"expected end <= len(reference) = {ref_len}, found {end}", "bad_value"
                )
            )
    return problems


def parse_probe_record(obj: Any, location: str = "record") -> ProbeRecord:
    problems = validate_probe_record(obj, location)
    if problems:
        raise SchemaError(problems, "invalid probe record")
    spans = tuple(Span(s["name"], s["start"], s["end"]) for s in obj.get("spans", []))
    return ProbeRecord(
        id=obj["id"],
        domain=obj["domain"],
        prompt=obj["prompt"],
        reference=obj["reference"],
        spans=spans,
        source=obj["source"],
        license=obj["license"],
    )


def read_probe_jsonl(path: str | Path) -> list[ProbeRecord]:
    """Read a probe corpus; one error lists every bad line, naming the line and field."""
    path = Path(path)
    if not path.is_file():
        found = "a directory" if path.is_dir() else "nothing (the path does not exist)"
        raise SchemaError(
            [Problem(str(path), f"expected a probe.jsonl file, found {found}", "not_a_file")]
        )
    records: list[ProbeRecord] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    # Bytes, decoded line by line: a bad byte is reported with its line, not as a traceback.
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                problems.append(
                    Problem(
                        where,
                        f"expected UTF-8 text, found byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line",
                        "bad_encoding",
                    )
                )
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(
                    Problem(
                        where, f"expected a JSON object, found invalid JSON ({e.msg})", "bad_json"
                    )
                )
                continue
            found = validate_probe_record(obj, where)
            if found:
                problems.extend(found)
                continue
            rec = parse_probe_record(obj, where)
            if rec.id in seen:
                problems.append(
                    Problem(
                        f"{where} field 'id'",
                        f"expected unique ids, found {rec.id!r} again (first on line {seen[rec.id]})",
                        "duplicate",
                    )
                )
                continue
            seen[rec.id] = lineno
            records.append(rec)
    if problems:
        raise SchemaError(problems, f"invalid probe corpus {path}")
    if not records:
        raise SchemaError([Problem(str(path), "expected at least one record, found none", "empty")])
    return records


def probe_sources(records: Iterable[ProbeRecord]) -> list[dict[str, Any]]:
    """Where the probe corpus came from: one row per (domain, source, license) with its record
    count, sorted. Extract stores it as the root attr ``probe_sources``; the report lists it."""
    counts: dict[tuple[str, str, str], int] = {}
    for rec in records:
        key = (rec.domain, rec.source, rec.license)
        counts[key] = counts.get(key, 0) + 1
    return [
        {"domain": d, "source": s, "license": lic, "n_records": n}
        for (d, s, lic), n in sorted(counts.items())
    ]


def probe_corpus_hash(records: Iterable[ProbeRecord]) -> str:
    """sha256 over a canonical serialisation: stable across runs, platforms and file layout."""
    h = hashlib.sha256()
    for rec in records:
        h.update(rec.to_json().encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()
