"""Code scorer: pull the program out of a completion and run the task's tests in the sandbox."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from train.scorers.sandbox import SandboxConfig, run_python_tests

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)
_CODE_START = re.compile(r"^(?:def |class |import |from |@)", re.M)


def extract_code(completion: str, entry_point: str = "") -> str:
    """The code in a completion: the fenced block defining ``entry_point`` (else the first
    fenced block; an unclosed fence runs to the end), or, without fences, the text from the
    first line that starts like Python (``def``/``import``/...), dropping leading prose."""
    blocks = [m.group(1) for m in _FENCE.finditer(completion)]
    if blocks:
        for block in blocks:
            if entry_point and re.search(rf"\bdef\s+{re.escape(entry_point)}\b", block):
                return block
        return blocks[0]
    start = _CODE_START.search(completion)
    return completion[start.start() :] if start else completion


def score_code(
    record: Mapping[str, Any], completion: str, config: SandboxConfig | None = None
) -> float:
    meta = record.get("meta") or {}
    tests = list(meta.get("tests") or [])
    if not tests:
        raise ValueError(f"code record {record.get('id')!r} has no meta['tests']")
    code = extract_code(completion, str(meta.get("entry_point", "")))
    return 1.0 if run_python_tests(code, tests, config).passed else 0.0
