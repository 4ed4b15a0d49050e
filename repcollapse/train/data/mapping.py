"""Users' data in common shapes, mapped onto the project's records (docs/data.md).

Two shapes are read, from a JSONL file, a directory written by ``datasets``' ``save_to_disk``
(read with ``load_from_disk``), an HF ``Dataset`` or a list of dicts:

- ``fields``: one column per part, e.g. an instruction/input/output data set mapped with
  ``prompt=instruction,input=input,response=output`` (a non-empty ``input`` is appended to the
  prompt after a blank line, the Alpaca convention);
- ``messages``: a chat list (``role``/``content``; ShareGPT's ``from``/``value`` with
  ``human``/``gpt`` also read) holding optional system messages, then one user turn, then one
  assistant turn: prompt = the system text(s) and the user text separated by a blank line,
  response = the assistant text.

A mapping is explicit: a column that a record lacks is an error naming the file, the record
number (1-based, as an editor shows a JSONL line) and the missing column, never a silent
default. ``map_records`` returns records in the project's format, validated by
``repcollapse.train.data.loaders.load_records``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repcollapse.store_schema.records import DOMAIN_NAME_RULE, is_domain_name

SHAPES: tuple[str, ...] = ("fields", "messages")
TARGETS: dict[str, tuple[str, ...]] = {
    # Record kind -> the project fields a ``fields`` mapping may fill (besides meta.<key>).
    "sft": ("id", "domain", "prompt", "input", "response"),
    "preference": ("id", "prompt", "input", "chosen", "rejected"),
    "probe": ("id", "domain", "prompt", "input", "reference", "source", "license"),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "sft": ("prompt", "response"),
    "preference": ("prompt", "chosen", "rejected"),
    "probe": ("prompt", "reference"),
}
_ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}


class MappingError(ValueError):
    """A record does not fit its mapping; the message is one line naming file, record, field."""


@dataclass(frozen=True)
class RecordMapping:
    """Which column of the user's records becomes which field of the project's records."""

    columns: tuple[tuple[str, str], ...] = field(
        default=(),
        metadata={"help": "(target, source column) pairs, e.g. (('prompt', 'instruction'),)"},
    )
    shape: str = field(default="fields", metadata={"help": "'fields' or 'messages'"})
    messages: str = field(
        default="messages", metadata={"help": "column holding the chat list (messages shape)"}
    )
    domain: str = field(
        default="",
        metadata={"help": "domain of every record ('' = read it from a mapped 'domain' column)"},
    )
    id_prefix: str = field(
        default="", metadata={"help": "ids '<prefix>-<n>' when no 'id' column is mapped"}
    )

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(
                f"RecordMapping.shape: expected one of {list(SHAPES)}, found {self.shape!r}"
            )
        targets = [t for t, _ in self.columns]
        for t in targets:
            if targets.count(t) > 1:
                raise ValueError(
                    f"RecordMapping.columns: expected each target once, found {t!r} twice"
                )
        if self.domain and not is_domain_name(self.domain):
            raise ValueError(
                f"RecordMapping.domain: expected {DOMAIN_NAME_RULE}, found {self.domain!r}"
            )

    def source_of(self, target: str) -> str | None:
        return dict(self.columns).get(target)


def parse_mapping(text: str, **kw: Any) -> RecordMapping:
    """``"prompt=instruction,input=input,response=output"`` (target=column pairs; a target
    ``meta.<key>`` copies a column into ``meta``); ``"messages"`` or ``"messages=conversations"``
    selects the chat shape (the column holding the list). Keywords go to ``RecordMapping``."""
    pairs: list[tuple[str, str]] = []
    shape, messages = "fields", "messages"
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        target, sep, column = (s.strip() for s in part.partition("="))
        if target == "messages":
            shape, messages = "messages", column or "messages"
            continue
        if not sep or not target or not column:
            raise ValueError(
                f"--map {text!r}: expected TARGET=COLUMN pairs separated by ',', e.g. "
                f"prompt=instruction,response=output; found {part!r}"
            )
        pairs.append((target, column))
    return RecordMapping(columns=tuple(pairs), shape=shape, messages=messages, **kw)


def _check_targets(mapping: RecordMapping, kind: str) -> None:
    allowed = TARGETS[kind]
    for target, _ in mapping.columns:
        if target not in allowed and not target.startswith("meta."):
            raise ValueError(
                f"mapping target {target!r}: expected one of {list(allowed)} or meta.<key> "
                f"for {kind} records"
            )
    if mapping.shape == "messages":
        if kind == "preference":
            raise ValueError("mapping shape 'messages': preference pairs need the fields shape")
        return
    missing = [t for t in _REQUIRED[kind] if mapping.source_of(t) is None]
    if missing:
        raise ValueError(
            f"mapping for {kind} records: expected a column for {missing} "
            f"(e.g. {missing[0]}=COLUMN), found mappings for {[t for t, _ in mapping.columns]}"
        )


def _rows(source: Any) -> tuple[str, Iterable[Any], str]:
    """(label, rows, unit): a JSONL file, a ``save_to_disk`` directory, a Dataset or a list."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return str(path), _disk_dataset(path), "row"
        if not path.is_file():
            raise MappingError(
                f"{path}: expected a JSONL file or a save_to_disk directory, found nothing"
            )
        return str(path), _jsonl(path), "record"
    if isinstance(source, Mapping):  # a DatasetDict is a dict of splits
        raise MappingError(
            f"dataset: expected records (one split, a Dataset, or a list), found a "
            f"{type(source).__name__} with keys {sorted(source)[:5]}"
        )
    return "dataset", source, "row"


def _jsonl(path: Path) -> Iterator[Any]:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                yield None  # keeps the record number equal to the line number
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise MappingError(f"{path} record {n}: invalid JSON ({e.msg})") from e


def _disk_dataset(path: Path) -> Any:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a training dependency
        raise MappingError(f"{path}: reading a save_to_disk directory needs 'datasets'") from e
    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise MappingError(
            f"{path}: expected a directory written by datasets' save_to_disk, found none ({e})"
        ) from e
    if isinstance(ds, datasets.DatasetDict):
        raise MappingError(
            f"{path}: expected one split, found a DatasetDict with {sorted(ds)}; "
            f"pass {path / sorted(ds)[0]}"
        )
    return ds


def _get(row: Mapping[str, Any], column: str, where: str, target: str) -> Any:
    if column not in row:
        raise MappingError(
            f"{where}: missing field {column!r} (mapped to {target}); found fields {sorted(row)}"
        )
    return row[column]


def _text(value: Any, where: str, column: str) -> str:
    if not isinstance(value, str):
        raise MappingError(
            f"{where}: field {column!r}: expected a string, found {type(value).__name__}"
        )
    return value


def _from_messages(row: Mapping[str, Any], mapping: RecordMapping, where: str) -> tuple[str, str]:
    msgs = _get(row, mapping.messages, where, "messages")
    if not isinstance(msgs, list):
        raise MappingError(
            f"{where}: field {mapping.messages!r}: expected a list of messages, "
            f"found {type(msgs).__name__}"
        )
    roles: list[str] = []
    texts: list[str] = []
    for i, m in enumerate(msgs):
        if not isinstance(m, Mapping):
            raise MappingError(f"{where}: {mapping.messages}[{i}]: expected an object, found {m!r}")
        role = m.get("role", m.get("from"))
        content = m.get("content", m.get("value"))
        if not isinstance(role, str) or not isinstance(content, str):
            raise MappingError(
                f"{where}: {mapping.messages}[{i}]: expected string 'role' and 'content' "
                f"(or 'from' and 'value'), found keys {sorted(m)}"
            )
        roles.append(_ROLE_ALIASES.get(role, role))
        texts.append(content)
    n_sys = 0
    while n_sys < len(roles) and roles[n_sys] == "system":
        n_sys += 1
    if roles[n_sys:] != ["user", "assistant"]:
        raise MappingError(
            f"{where}: field {mapping.messages!r}: expected system messages (optional), one "
            f"user turn, then one assistant turn; found roles {roles}"
        )
    prompt = "\n\n".join(t for t in (*texts[:n_sys], texts[n_sys]) if t)
    return prompt, texts[n_sys + 1]


def _one(
    row: Any, n: int, mapping: RecordMapping, kind: str, where: str, label: str
) -> dict[str, Any]:
    if not isinstance(row, Mapping):
        raise MappingError(f"{where}: expected an object, found {type(row).__name__}")
    rec: dict[str, Any] = {"meta": {}}
    for target, column in mapping.columns:
        value = _get(row, column, where, target)
        if target.startswith("meta."):
            rec["meta"][target[len("meta.") :]] = value
        elif target == "input":
            rec["input"] = "" if value is None else _text(value, where, column)
        else:
            rec[target] = _text(value, where, column)
    if mapping.shape == "messages":
        prompt, response = _from_messages(row, mapping, where)
        rec["prompt"] = prompt
        rec["reference" if kind == "probe" else "response"] = response
    extra = rec.pop("input", "")
    if extra.strip():
        rec["prompt"] = f"{rec['prompt']}\n\n{extra}"
    if kind != "preference":
        domain = rec.get("domain") or mapping.domain
        if not domain:
            raise MappingError(
                f"{where}: no domain: map a domain column (domain=COLUMN) or give the mapping a domain"
            )
        if not is_domain_name(domain):
            raise MappingError(f"{where}: domain: expected {DOMAIN_NAME_RULE}, found {domain!r}")
        rec["domain"] = domain
    if "id" not in rec:
        prefix = mapping.id_prefix or Path(label).stem or "record"
        rec["id"] = f"{prefix}-{n:06d}"
    if kind == "probe":
        from repcollapse.train.data.probe import halves

        rec.setdefault("source", label)
        rec.setdefault("license", "unspecified")
        rec["spans"] = [
            {"name": s.name, "start": s.start, "end": s.end} for s in halves(rec["reference"])
        ]
        rec.pop("meta")
    return rec


def map_records(source: Any, mapping: RecordMapping, kind: str = "sft") -> list[Any]:
    """The user's records in the project's format, validated (``load_records``): dicts for
    ``sft``/``preference``, ``ProbeRecord`` objects for ``probe`` (spans: the early/late halves
    of the reference). Raises ``MappingError`` (one line) on the first record that does not fit
    the mapping, ``SchemaError`` when mapped records break the record format."""
    from repcollapse.train.data.loaders import KINDS, load_records

    if kind not in KINDS:
        raise ValueError(f"map_records: kind expected one of {list(KINDS)}, found {kind!r}")
    _check_targets(mapping, kind)
    label, rows, unit = _rows(source)
    out, where = [], []
    for n, row in enumerate(rows, start=1 if unit == "record" else 0):
        if row is None:
            continue
        where.append(f"{label} {unit} {n}")
        out.append(_one(row, n, mapping, kind, where[-1], label))
    if not out:
        raise MappingError(f"{label}: expected at least one record, found none")
    return load_records(out, kind, locations=where)


def write_jsonl(records: Iterable[Any], path: str | os.PathLike[str]) -> Path:
    """Write mapped records as JSONL where ``data build`` would put them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for r in records:
        lines.append(
            r.to_json()
            if hasattr(r, "to_json")
            else json.dumps(r, ensure_ascii=False, sort_keys=True)
        )
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path
