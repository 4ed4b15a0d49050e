"""Instruction-following checks (``meta['checks']`` of general records).

The score is the fraction of checks passed, so that partial compliance moves the curve.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from repcollapse.train.scorers.text import first_line, normalise

_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")


def _items(text: str) -> list[str]:
    """Non-empty lines with list bullets / numbering removed."""
    return [_BULLET.sub("", line).strip() for line in text.splitlines() if line.strip()]


def _exact(c: str, chk: Mapping[str, Any]) -> bool:
    case = bool(chk.get("case_sensitive", False))
    want = normalise(str(chk["value"]), case)
    # A short extra line ("Hope this helps!") after the right answer still counts.
    return normalise(c, case) == want or normalise(first_line(c), case) == want


def _json_object(c: str, chk: Mapping[str, Any]) -> bool:
    text = c.strip()
    fence = re.search(r"```(?:json)?\s*\n?(.*?)```", text, re.S)
    if fence:
        text = fence.group(1).strip()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return False
    keys = chk.get("keys") or {}
    return isinstance(obj, dict) and all(k in obj and obj[k] == v for k, v in keys.items())


def _letters(c: str) -> list[str]:
    return [ch for ch in c if ch.isalpha()]


CHECKS: dict[str, Callable[[str, Mapping[str, Any]], bool]] = {
    "exact": _exact,
    "line_count": lambda c, k: len(_items(c)) == int(k["n"]),
    "distinct_lines": lambda c, k: (
        bool(_items(c)) and len({x.casefold() for x in _items(c)}) == len(_items(c))
    ),
    "lines_start_with": lambda c, k: (
        bool(_items(c))
        and all(x.casefold().startswith(str(k["letter"]).casefold()) for x in _items(c))
    ),
    "all_upper": lambda c, k: bool(_letters(c)) and not any(ch.islower() for ch in c),
    "all_lower": lambda c, k: bool(_letters(c)) and not any(ch.isupper() for ch in c),
    "contains": lambda c, k: re.search(rf"\b{re.escape(str(k['value']))}\b", c, re.I) is not None,
    "ends_with": lambda c, k: bool(c.strip()) and c.rstrip().endswith(str(k["value"])),
    "max_words": lambda c, k: 1 <= len(c.split()) <= int(k["n"]),
    "word_count": lambda c, k: len(c.split()) == int(k["n"]),
    "json_object": _json_object,
}
CHECK_TYPES: tuple[str, ...] = tuple(CHECKS)


def score_checks(checks: Sequence[Mapping[str, Any]], completion: str) -> float:
    """Fraction of checks the completion passes; a malformed check counts as failed."""
    if not checks:
        raise ValueError("general record has no checks in meta['checks']")
    passed = 0
    for chk in checks:
        fn = CHECKS.get(str(chk.get("type")))
        if fn is None:
            raise ValueError(f"unknown check type {chk.get('type')!r}; known: {list(CHECK_TYPES)}")
        with contextlib.suppress(KeyError, TypeError, ValueError):
            passed += bool(fn(completion, chk))
    return passed / len(checks)
