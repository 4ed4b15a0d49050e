"""Plain-data verdicts for code tests: the parent decides pass/fail, never the sandboxed child.

A test list such as ``["assert add(2, 3) == 5"]`` is split in the parent into

* the parts only the untrusted code can compute (``add(2, 3)``): their source goes to the
  child, which evaluates them and sends back their values encoded as tagged JSON
  (``repcollapse.train.scorers._sandbox_bootstrap``);
* the rest (``== 5``, and the expected literal): kept here, and evaluated by a small
  interpreter over the decoded values, which are built from plain builtins by this process.

So the child never sees the expected values, and nothing it returns can vote: an object whose
``__eq__`` is always true cannot even be encoded, and a value it sends is only data compared
here. Non-assert statements (imports, assignments) run in the child as set-up. An ``assert``
inside a ``def``/loop would be decided by the child, so it is refused, except the
HumanEval-style ``def check(candidate): assert ...`` followed by ``check(name)``, whose asserts
are inlined with ``candidate`` replaced by ``name``.
"""

from __future__ import annotations

import ast
import json
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

_HOLE = "__sandbox_hole_"
_MAX_SEQ = 10_000_000  # longest str/list the parent will build from child data


class CheckError(ValueError):
    """A test that cannot be decided outside the sandbox (names the test and the reason)."""


class _Fail(Exception):
    """A check that does not hold or cannot be evaluated on the child's values."""


@dataclass(frozen=True)
class Plan:
    steps: tuple[dict[str, Any], ...]  # sent to the child: {"exec": src} | {"eval": src}
    checks: tuple[ast.expr, ...]  # parent-only: assert expressions with holes
    n_holes: int

    def child_program(self) -> list[dict[str, Any]]:
        return [dict(s) for s in self.steps]


def _bin_guard(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        # Values come from the child: refuse results that would take the parent long to build.
        if op is operator.pow and isinstance(b, int) and abs(b) > 10_000:
            raise _Fail("exponent too large")
        if op is operator.mul:
            for seq, n in ((a, b), (b, a)):
                sized = isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int)
                if sized and len(seq) * max(n, 0) > _MAX_SEQ:
                    raise _Fail("repetition too large")
        return op(a, b)

    return apply


_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: _bin_guard(operator.mul),
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _bin_guard(operator.pow),
}
_UNOPS: dict[type, Callable[[Any], Any]] = {
    ast.Not: operator.not_,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Invert: operator.invert,
}
_CMPOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_SAFE_CALLS: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (
        abs,
        len,
        round,
        sorted,
        set,
        frozenset,
        list,
        tuple,
        dict,
        int,
        float,
        str,
        bool,
        min,
        max,
        sum,
        all,
        any,
    )  # fmt: skip
}
_SAFE_CALLS["math.isclose"] = math.isclose


def _call_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return f"{func.value.id}.{func.attr}"
    return None


def _singleton(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value in (None, True, False)


class _Splitter(ast.NodeTransformer):
    """Replaces every sub-expression the parent cannot evaluate with a numbered hole."""

    def __init__(self, holes: list[str]) -> None:
        self.holes = holes

    def hole(self, node: ast.expr) -> ast.expr:
        if isinstance(node, ast.GeneratorExp):  # the child can send a list, not a generator
            node = ast.ListComp(elt=node.elt, generators=node.generators)
        self.holes.append(ast.unparse(node))
        return ast.Name(id=f"{_HOLE}{len(self.holes) - 1}", ctx=ast.Load())

    def visit(self, node: ast.AST) -> Any:
        assert isinstance(node, ast.expr)
        v = self.visit
        if isinstance(node, ast.Constant):
            return node
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            if not any(isinstance(e, ast.Starred) for e in node.elts):
                node.elts = [v(e) for e in node.elts]
                return node
        elif isinstance(node, ast.Dict):
            if None not in node.keys:
                node.keys = [v(k) for k in node.keys]  # type: ignore[arg-type]
                node.values = [v(x) for x in node.values]
                return node
        elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNOPS:
            node.operand = v(node.operand)
            return node
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            node.left, node.right = v(node.left), v(node.right)
            return node
        elif isinstance(node, ast.BoolOp):
            node.values = [v(x) for x in node.values]
            return node
        elif isinstance(node, ast.IfExp):
            node.test, node.body, node.orelse = v(node.test), v(node.body), v(node.orelse)
            return node
        elif isinstance(node, ast.Compare):
            items = [node.left, *node.comparators]
            # `is` means something on plain data only against None/True/False.
            if all(
                not isinstance(op, (ast.Is, ast.IsNot)) or _singleton(a) or _singleton(b)
                for op, a, b in zip(node.ops, items, items[1:], strict=False)
            ):
                node.left, node.comparators = v(node.left), [v(c) for c in node.comparators]
                return node
        elif isinstance(node, ast.Subscript):
            node.value, node.slice = v(node.value), v(node.slice)
            return node
        elif isinstance(node, ast.Slice):
            node.lower, node.upper, node.step = (
                None if x is None else v(x) for x in (node.lower, node.upper, node.step)
            )
            return node
        elif isinstance(node, ast.Call) and (
            _call_name(node.func) in _SAFE_CALLS
            and all(isinstance(k.value, ast.Constant) and k.arg for k in node.keywords)
            and not any(isinstance(a, ast.Starred) for a in node.args)
        ):
            node.args = [v(a) for a in node.args]
            return node
        return self.hole(node)


def _inline_check(defn: ast.FunctionDef, target: str) -> list[ast.stmt]:
    """The asserts of ``def check(candidate): ...`` with ``candidate`` renamed to ``target``."""
    arg = defn.args.args[0].arg
    body = [
        s for s in defn.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
    ]

    class Rename(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.Name:
            return ast.Name(id=target, ctx=node.ctx) if node.id == arg else node

    return [Rename().visit(s) for s in body]


def _contains_assert(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Assert) for n in ast.walk(node))


def plan_tests(tests: Sequence[str]) -> Plan:
    """Split assert tests into child evaluations and parent checks (CheckError if a test
    cannot be decided outside the sandbox)."""
    stmts: list[tuple[int, ast.stmt]] = []
    for i, src in enumerate(tests):
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError) as exc:  # ValueError: NUL bytes, lone surrogates
            msg = exc.msg if isinstance(exc, SyntaxError) else str(exc)
            raise CheckError(f"tests[{i}]: not valid Python ({msg}): {src!r}") from None
        stmts.extend((i, s) for s in tree.body)
    checkers: dict[str, ast.FunctionDef] = {}
    steps: list[dict[str, Any]] = []
    checks: list[ast.expr] = []
    holes: list[str] = []
    queue = list(stmts)
    while queue:
        i, stmt = queue.pop(0)
        if (
            isinstance(stmt, ast.FunctionDef)
            and len(stmt.args.args) == 1
            and all(isinstance(s, (ast.Assert, ast.Expr)) for s in stmt.body)
        ):
            checkers[stmt.name] = stmt  # HumanEval style; inlined where it is called
            continue
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id in checkers
            and len(call.args) == 1
            and isinstance(call.args[0], ast.Name)
        ):
            inlined = _inline_check(checkers[call.func.id], call.args[0].id)
            queue[:0] = [(i, s) for s in inlined]
            continue
        if isinstance(stmt, ast.Assert):
            first = len(holes)
            checks.append(_Splitter(holes).visit(stmt.test))
            steps.extend({"eval": h} for h in holes[first:])
            continue
        if _contains_assert(stmt):
            raise CheckError(
                f"tests[{i}]: an assert inside a {type(stmt).__name__} would be decided by the "
                f"sandboxed code; write top-level 'assert <call> == <value>' lines: "
                f"{ast.unparse(stmt)[:200]!r}"
            )
        steps.append({"exec": ast.unparse(stmt)})
    if not checks:
        raise CheckError("tests: expected at least one top-level assert, found none")
    return Plan(tuple(steps), tuple(checks), len(holes))


def decode(obj: Any, depth: int = 0) -> Any:
    """Tagged JSON from the child -> builtin values (the inverse of the bootstrap's encoder)."""
    if depth > 100:
        raise _Fail("value nested too deeply")
    if obj is None or isinstance(obj, (bool, int, str, float)):
        return obj
    if isinstance(obj, list):
        return [decode(v, depth + 1) for v in obj]
    if isinstance(obj, dict) and len(obj) == 1:
        ((tag, v),) = obj.items()
        try:
            if tag == "f" and isinstance(v, str):
                return float(v)
            if tag == "c" and isinstance(v, list) and len(v) == 2:
                return complex(float(v[0]), float(v[1]))
            if tag == "x" and isinstance(v, str):
                return bytes.fromhex(v).decode("utf-8", "surrogatepass")
            if tag == "b" and isinstance(v, str):
                return bytes.fromhex(v)
            if tag in ("t", "s", "fs") and isinstance(v, list):
                items = [decode(x, depth + 1) for x in v]
                return {"t": tuple, "s": set, "fs": frozenset}[tag](items)
            if tag == "d" and isinstance(v, list):
                return {decode(k, depth + 1): decode(x, depth + 1) for k, x in v}
        except (TypeError, ValueError) as exc:
            raise _Fail(f"bad {tag!r} value: {exc}") from None
    raise _Fail(f"not an encoded value: {str(obj)[:80]!r}")


def _evaluate(node: ast.expr, env: dict[str, Any]) -> Any:
    ev = lambda n: _evaluate(n, env)  # noqa: E731
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        value = env[node.id]
        if isinstance(value, _Fail):
            raise value
        return value
    if isinstance(node, ast.List):
        return [ev(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(ev(e) for e in node.elts)
    if isinstance(node, ast.Set):
        return {ev(e) for e in node.elts}
    if isinstance(node, ast.Dict):
        return {ev(k): ev(v) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    if isinstance(node, ast.UnaryOp):
        return _UNOPS[type(node.op)](ev(node.operand))
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
    if isinstance(node, ast.BoolOp):
        result: Any = None
        for v in node.values:
            result = ev(v)
            if bool(result) != isinstance(node.op, ast.And):
                return result
        return result
    if isinstance(node, ast.IfExp):
        return ev(node.body) if ev(node.test) else ev(node.orelse)
    if isinstance(node, ast.Compare):
        left = ev(node.left)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = ev(comp)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Subscript):
        return ev(node.value)[ev(node.slice)]
    if isinstance(node, ast.Slice):
        lo, hi, st = (ev(x) if x is not None else None for x in (node.lower, node.upper, node.step))
        return slice(lo, hi, st)
    if isinstance(node, ast.Call):
        fn = _SAFE_CALLS[_call_name(node.func) or ""]
        kwargs = {k.arg: ev(k.value) for k in node.keywords if k.arg is not None}
        return fn(*[ev(a) for a in node.args], **kwargs)
    raise _Fail(f"cannot evaluate {type(node).__name__}")


def verdict(plan: Plan, child_json: str) -> tuple[bool, str]:
    """(passed, reason) from the child's reported values; every check must hold."""
    try:
        reported = json.loads(child_json)
        values = reported["values"]
        if not isinstance(values, list) or len(values) != plan.n_holes:
            return False, f"expected {plan.n_holes} values from the child, found {len(values)}"
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        return False, f"unreadable child output: {type(exc).__name__}"
    env: dict[str, Any] = {}
    for k, item in enumerate(values):
        try:
            if not (isinstance(item, list) and len(item) == 2 and item[0] == "ok"):
                raise _Fail(f"the code raised {str(item)[:80]}")
            env[f"{_HOLE}{k}"] = decode(item[1])
        except (_Fail, RecursionError) as exc:
            env[f"{_HOLE}{k}"] = exc if isinstance(exc, _Fail) else _Fail("nested too deeply")
    for n, check in enumerate(plan.checks):
        try:
            if not _evaluate(check, env):
                return False, f"check {n} does not hold: {ast.unparse(check)[:120]}"
        except (_Fail, ArithmeticError, TypeError, ValueError, LookupError, RecursionError) as exc:
            return False, f"check {n} failed: {type(exc).__name__}: {exc}"[:300]
    return True, "all checks hold"
