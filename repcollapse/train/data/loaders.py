"""Load users' own data (JSONL files or HF ``datasets``) in the documented record format.

Every record is validated and all problems are reported at once in one ``SchemaError``,
each naming the file and line (or dataset row) and the field.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from repcollapse.store_schema.problems import Problem, SchemaError
from repcollapse.store_schema.records import (
    ProbeRecord,
    parse_probe_record,
    read_probe_jsonl,
    validate_probe_record,
)
from repcollapse.train.data.future_tasks import FUTURE_TASKS

KINDS: tuple[str, ...] = ("sft", "preference", "probe")
_REQUIRED = {
    "sft": ("id", "domain", "prompt", "response"),
    "preference": ("id", "prompt", "chosen", "rejected"),
}


def _field(where: str, name: str) -> str:
    return f"{where} field '{name}'"


def _meta_problems(domain: str, meta: Mapping[str, Any], where: str) -> list[Problem]:
    """What the domain's scorer needs in ``meta`` (unknown domains need nothing)."""
    # Imported here: the check vocabulary belongs to the scorer.
    from repcollapse.train.scorers.general import CHECK_TYPES

    out: list[Problem] = []

    def need(key: str, typ: type | tuple[type, ...], desc: str) -> Any:
        value = meta.get(key)
        if key not in meta:
            out.append(
                Problem(
                    _field(where, f"meta.{key}"),
                    f"missing; {domain} records need {desc}",
                    "missing_field",
                )
            )
        elif not isinstance(value, typ):
            out.append(
                Problem(
                    _field(where, f"meta.{key}"),
                    f"expected {desc}, found {type(value).__name__} {value!r}",
                    "wrong_type",
                )
            )
        else:
            return value
        return None

    if domain in ("math", "long_cot") or domain in FUTURE_TASKS:
        need("answer", str, "a string answer")
    elif domain == "safety":
        need("harmful", bool, "a boolean")
    elif domain == "code":
        need("entry_point", str, "the function name (string)")
        tests = need("tests", list, "a list of assert statements")
        if tests is not None and (not tests or not all(isinstance(t, str) for t in tests)):
            out.append(
                Problem(
                    _field(where, "meta.tests"),
                    f"expected a non-empty list of strings, found {tests!r}",
                    "bad_value",
                )
            )
    elif domain == "general":
        checks = need("checks", list, "a list of check objects")
        for i, chk in enumerate(checks or []):
            ctype = chk.get("type") if isinstance(chk, Mapping) else None
            if ctype not in CHECK_TYPES:
                out.append(
                    Problem(
                        _field(where, f"meta.checks[{i}]"),
                        f"expected an object with 'type' in {list(CHECK_TYPES)}, found {chk!r}",
                        "bad_value",
                    )
                )
    return out


def validate_record(obj: Any, kind: str, where: str) -> list[Problem]:
    """Every problem with one SFT or preference record (a parsed JSON object)."""
    if not isinstance(obj, Mapping):
        return [Problem(where, f"expected a JSON object, found {type(obj).__name__}", "wrong_type")]
    problems: list[Problem] = []
    for key in _REQUIRED[kind]:
        if key not in obj:
            problems.append(Problem(_field(where, key), "missing required field", "missing_field"))
        elif not isinstance(obj[key], str):
            problems.append(
                Problem(
                    _field(where, key),
                    f"expected a string, found {type(obj[key]).__name__}",
                    "wrong_type",
                )
            )
        elif key in ("id", "domain") and not obj[key]:
            problems.append(
                Problem(_field(where, key), "expected a non-empty string, found ''", "bad_value")
            )
    if "domain" in obj and kind == "preference" and not isinstance(obj["domain"], str):
        problems.append(Problem(_field(where, "domain"), "expected a string", "wrong_type"))
    meta = obj.get("meta", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, Mapping):
        problems.append(
            Problem(
                _field(where, "meta"),
                f"expected an object, found {type(meta).__name__}",
                "wrong_type",
            )
        )
    elif kind == "sft" and isinstance(obj.get("domain"), str):
        problems.extend(_meta_problems(obj["domain"], meta, where))
    return problems


def _normalise(obj: Mapping[str, Any], kind: str) -> dict[str, Any]:
    rec = dict(obj)
    rec["meta"] = dict(rec.get("meta") or {})
    if kind == "preference":
        rec.setdefault("domain", "preference")
    return rec


def _jsonl_rows(path: Path, problems: list[Problem]) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(
                    Problem(
                        where, f"expected a JSON object, found invalid JSON ({e.msg})", "bad_json"
                    )
                )


def _dataset_rows(rows: Iterable[Any], name: str) -> Iterator[tuple[str, Any]]:
    for i, row in enumerate(rows):
        yield f"{name} row {i}", row


def _hf_dataset_kind(source: Any) -> str | None:
    """'dataset', 'dict' (a DatasetDict) or None. A Dataset object can only exist when its
    module is imported, so looking in sys.modules keeps ``datasets`` out of plain-file loads."""
    mod = sys.modules.get("datasets")
    if mod is None:
        return None
    dict_types = (getattr(mod, "DatasetDict", ()), getattr(mod, "IterableDatasetDict", ()))
    if isinstance(source, dict_types):
        return "dict"
    if isinstance(source, (mod.Dataset, getattr(mod, "IterableDataset", mod.Dataset))):
        return "dataset"
    return None


def load_records(
    source: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    kind: str = "sft",
    *,
    locations: list[str] | None = None,
) -> list[dict[str, Any]] | list[ProbeRecord]:
    """Validate and load records from a JSONL path, an HF ``datasets.Dataset`` or a list of
    dicts. ``kind``: "sft" (also future tasks), "preference" or "probe" (returns
    ``ProbeRecord`` objects). Raises ``SchemaError`` listing every bad line and field.
    ``locations``: for a list, where each record came from (e.g. ``file.jsonl record 3``, as
    ``mapping.map_records`` passes), used in the messages instead of ``records row i``."""
    if kind not in KINDS:
        raise ValueError(f"load_records: kind expected one of {list(KINDS)}, found {kind!r}")
    problems: list[Problem] = []
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise SchemaError(
                [Problem(str(path), "expected a JSONL file, found none", "missing_file")]
            )
        if kind == "probe":
            return read_probe_jsonl(path)
        label = str(path)
        rows: Iterator[tuple[str, Any]] = _jsonl_rows(path, problems)
    else:
        hf = _hf_dataset_kind(source)
        if hf == "dict":
            raise SchemaError(
                [
                    Problem(
                        "dataset",
                        "expected a Dataset, found a DatasetDict; pass one split, e.g. ds['train']",
                        "wrong_type",
                    )
                ]
            )
        label = "dataset" if hf else "records"
        rows = (
            zip(locations, source, strict=True)
            if locations is not None
            else _dataset_rows(source, label)
        )
    out: list[Any] = []
    seen: dict[str, str] = {}
    for where, obj in rows:
        found = (
            validate_probe_record(obj, where)
            if kind == "probe"
            else validate_record(obj, kind, where)
        )
        if found:
            problems.extend(found)
            continue
        rid = obj["id"]
        if rid in seen:
            problems.append(
                Problem(
                    _field(where, "id"),
                    f"expected unique ids, found {rid!r} again (first at {seen[rid]})",
                    "duplicate",
                )
            )
            continue
        seen[rid] = where
        out.append(parse_probe_record(obj, where) if kind == "probe" else _normalise(obj, kind))
    if problems:
        raise SchemaError(problems, f"invalid {kind} records in {label}")
    if not out:
        raise SchemaError([Problem(label, "expected at least one record, found none", "empty")])
    return out
