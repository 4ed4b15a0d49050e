"""The plain-data verdict: planning tests in the parent, decoding the child's values, and the
refusals (missing bubblewrap, tests the parent cannot decide)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from repcollapse.train.scorers import SandboxConfig, run_python_tests, score_completion
from repcollapse.train.scorers.checks import CheckError, decode, plan_tests, verdict
from repcollapse.train.scorers.sandbox import SandboxUnavailable, bwrap_problem

needs_bwrap = pytest.mark.skipif(
    bwrap_problem() is not None, reason=f"bubblewrap cannot run here: {bwrap_problem()}"
)


def _report(*values: object) -> str:
    return json.dumps({"values": [["ok", v] for v in values]})


def test_expected_values_never_reach_the_child() -> None:
    plan = plan_tests(["assert add(2, 3) == 987654", "assert sorted(s('ba')) == ['a', 'b']"])
    sent = json.dumps(plan.child_program())
    assert "987654" not in sent and "'a', 'b'" not in sent
    assert [s["eval"] for s in plan.steps] == ["add(2, 3)", "s('ba')"]


def test_verdict_uses_python_equality_on_plain_values() -> None:
    plan = plan_tests(["assert f(1) == [1, 2]", "assert g() == 3"])
    assert verdict(plan, _report([1, 2], 3))[0]
    assert verdict(plan, _report([1, 2], {"f": "3.0"}))[0]  # 3.0 == 3, as in the assert
    assert not verdict(plan, _report({"t": [1, 2]}, 3))[0]  # a tuple is not a list
    assert not verdict(plan, _report([1, 2]))[0]  # a missing value
    assert not verdict(plan, json.dumps({"values": [["ok", [1, 2]], ["raised", "KeyError"]]}))[0]


@pytest.mark.parametrize(
    "forged",
    [
        "",
        "not json",
        '{"values": "all good"}',
        '{"passed": true}',
        json.dumps({"values": [["ok", {"__eq__": "always"}], ["ok", 3]]}),
        json.dumps({"values": [["ok", {"s": [[1]]}], ["ok", 3]]}),  # unhashable set item
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_forged_or_broken_reports_fail(forged: str) -> None:
    plan = plan_tests(["assert f(1) == [1, 2]", "assert g() == 3"])
    assert verdict(plan, forged)[0] is False


def test_parent_side_operators() -> None:
    cases = [
        ("assert abs(f() - 1.5) < 1e-6", {"f": "1.5000001"}, True),
        ("assert math.isclose(f(), 0.1 + 0.2)", {"f": "0.30000000000000004"}, True),
        ("assert f() is None", None, True),
        ("assert f() is None", 0, False),
        ("assert not f()", [], True),
        ("assert f()", 0, False),
        ("assert 'b' in f()", "abc", True),
        ("assert f()[1:] == (2, 3)", {"t": [1, 2, 3]}, True),
        ("assert f() == {'a': {1, 2}}", {"d": [["a", {"s": [2, 1]}]]}, True),
        ("assert len(f()) == 3 and f()[0] == 'x'", ["x", "y", "z"], False),  # 2nd hole absent
        ("assert 'a' * f() == ''", 10**9, False),  # refused: the parent would build 1 GB
    ]
    for test, value, want in cases:
        plan = plan_tests([test])
        values = [["ok", value]] * plan.n_holes
        assert verdict(plan, json.dumps({"values": values[:1]}))[0] is want, test


def test_humaneval_check_is_inlined_and_asserts_in_loops_refused() -> None:
    plan = plan_tests(
        [
            "def check(candidate):\n    'doc'\n    assert candidate(1) == 2\n    assert candidate(3) == 6",
            "check(double)",
        ]
    )
    assert [s["eval"] for s in plan.steps] == ["double(1)", "double(3)"]
    with pytest.raises(CheckError, match=r"tests\[0\].*For"):
        plan_tests(["for i in range(3):\n    assert f(i) == 2 * i"])
    with pytest.raises(CheckError, match="at least one top-level assert"):
        plan_tests(["x = 1"])
    with pytest.raises(ValueError, match="'bad'.*meta.tests"):
        rec = {"id": "bad", "domain": "code", "meta": {"tests": ["def t():\n    assert f()"]}}
        score_completion(rec, "def f():\n    return 1")


def test_decode_rejects_unknown_tags() -> None:
    assert decode({"b": "6869"}) == b"hi"
    assert decode({"c": ["1.0", "-2.0"]}) == complex(1, -2)
    for bad in ({"x": 1}, {"f": 1.5}, {"t": 3}, {"a": 1, "b": 2}):
        with pytest.raises(Exception, match="encoded|bad"):
            decode(bad)


@needs_bwrap
def test_setup_statements_and_humaneval_run_end_to_end() -> None:
    code = "def double(x):\n    return 2 * x\n"
    tests = [
        "import math",
        "N = 4",
        "def check(candidate):\n    assert candidate(N) == 8\n    assert candidate(0.5) == 1.0",
        "check(double)",
        "assert math.floor(double(1.25)) == 2",
    ]
    result = run_python_tests(code, tests)
    assert result.passed, result.reason
    assert not run_python_tests(code.replace("2 * x", "x + x + 1"), tests).passed


@needs_bwrap
def test_prints_of_a_correct_solution_do_not_break_the_report() -> None:
    code = "import sys\nprint('noise')\nsys.stdout.write('{\"values\": []}')\ndef f(x):\n    return x * 2\n"
    assert run_python_tests(code, ["assert f(2) == 4"]).passed


def test_missing_bwrap_refuses_unless_process_mode_is_chosen(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no bwrap on PATH
    rec = {"id": "c", "domain": "code", "meta": {"entry_point": "f", "tests": ["assert f(2) == 4"]}}
    with pytest.raises(SandboxUnavailable, match="no 'bwrap' on PATH.*REPCOLLAPSE_SANDBOX=process"):
        score_completion(rec, "def f(x):\n    return x * 2")
    unsafe = SandboxConfig(isolation="process")
    assert score_completion(rec, "def f(x):\n    return x * 2", sandbox=unsafe) == 1.0
    assert score_completion(rec, "def f(x):\n    return x * 3", sandbox=unsafe) == 0.0
    monkeypatch.setenv("REPCOLLAPSE_SANDBOX", "process")
    assert SandboxConfig().isolation == "process"
    monkeypatch.setenv("REPCOLLAPSE_SANDBOX", "docker")
    with pytest.raises(ValueError, match="isolation.*REPCOLLAPSE_SANDBOX.*'docker'"):
        SandboxConfig()


def test_evaluation_stops_on_a_missing_sandbox(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A whole evaluation of fake zeros would be worse than stopping with the reason.
    from repcollapse.train.evaluate import SCORER_ERRORS, _score

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("REPCOLLAPSE_SANDBOX", raising=False)
    rec = {"id": "c", "domain": "code", "meta": {"entry_point": "f", "tests": ["assert f(2) == 4"]}}
    before = len(SCORER_ERRORS)
    with pytest.raises(SandboxUnavailable):
        _score([rec], ["def f(x):\n    return x * 2"], score_completion)
    assert len(SCORER_ERRORS) == before
    assert os.environ["PATH"] == str(tmp_path)


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("echo 'bwrap: No permissions to create new namespace' >&2; exit 1", "No permissions"),
        ("exit 0", "failed"),  # "works" but runs nothing: the probe wants the bootstrap's report
    ],
)
def test_a_bwrap_that_cannot_run_the_sandbox_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, script: str, reason: str
) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.delenv("REPCOLLAPSE_SANDBOX", raising=False)
    assert reason in (bwrap_problem() or "")
    with pytest.raises(SandboxUnavailable, match=f"bubblewrap cannot run.*{reason}"):
        run_python_tests("def f(x):\n    return x * 2", ["assert f(2) == 4"])


@needs_bwrap
def test_every_plain_type_round_trips_through_the_child() -> None:
    tail = ', {frozenset([1])}, 3j, -0.0, float("inf"), 10**300]'
    text = '"\\ud800\u00e9\\n\\""'  # a lone surrogate, a non-ASCII letter, a newline, a quote
    code = (
        f"def f(x):\n    return [x, str(x) * 2, {{x: (1.5, None, True)}}, b'\\xff', {text}{tail}\n"
    )
    test = f"assert f(2) == [2, '22', {{2: (1.5, None, True)}}, b'\\xff', {text}{tail}"
    assert run_python_tests(code, [test]).passed, (code, test)
    assert not run_python_tests(code.replace("10**300", "10**301"), [test]).passed
    # A lone surrogate in the code fails in the child, not in the scorer.
    assert not run_python_tests("def f():\n    return '\ud800'", ["assert f() == 1"]).passed
