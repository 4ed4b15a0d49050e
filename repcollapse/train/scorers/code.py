"""Code scorer: pull the program out of a completion and run the task's tests in the sandbox.

The tests (``meta['tests']``, top-level ``assert <call> == <value>`` lines, or a HumanEval-style
``def check(candidate)`` plus ``check(name)``) are planned once per record: the calls go to the
sandbox, the expected values stay in this process (``repcollapse.train.scorers.checks``)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from repcollapse.train.scorers.checks import CheckError, Plan, plan_tests
from repcollapse.train.scorers.sandbox import SandboxConfig, run_python_tests

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


@functools.lru_cache(maxsize=4096)
def _plan(tests: tuple[str, ...]) -> Plan:
    return plan_tests(tests)


def score_code(
    record: Mapping[str, Any], completion: str, config: SandboxConfig | None = None
) -> float:
    meta = record.get("meta") or {}
    tests = meta.get("tests") or []
    if not isinstance(tests, (list, tuple)) or not all(isinstance(t, str) for t in tests):
        raise ValueError(
            f"code record {record.get('id')!r}: meta['tests']: expected a list of strings, "
            f"found {type(tests).__name__}"
        )
    if not tests:
        raise ValueError(f"code record {record.get('id')!r} has no meta['tests']")
    try:
        plan = _plan(tuple(tests))
    except CheckError as exc:
        raise CheckError(f"code record {record.get('id')!r}: meta.{exc}") from None
    code = extract_code(completion, str(meta.get("entry_point", "")))
    return 1.0 if run_python_tests(code, plan, config).passed else 0.0
