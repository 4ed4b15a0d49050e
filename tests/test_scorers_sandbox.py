"""The code sandbox: misbehaving programs score 0 quickly and leave the caller unharmed."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from repcollapse.train.scorers import SandboxConfig, run_python_tests, score_completion

FAST = SandboxConfig(timeout_s=2.0)
TESTS = ["assert f(2) == 4"]


def _record(tests: list[str] | None = None) -> dict:
    return {"id": "c", "domain": "code", "meta": {"entry_point": "f", "tests": tests or TESTS}}


def _score(body: str, cfg: SandboxConfig = FAST) -> tuple[float, float]:
    start = time.monotonic()
    score = score_completion(_record(), f"```python\n{body}\n```", sandbox=cfg)
    return score, time.monotonic() - start


def test_correct_and_wrong_code() -> None:
    assert _score("def f(x):\n    return x * 2")[0] == 1.0
    assert _score("def f(x):\n    return x + 3")[0] == 0.0
    assert _score("def f(x) return")[0] == 0.0  # syntax error
    assert score_completion(_record(), "def f(x):\n    return x * x") == 1.0  # unfenced


def test_infinite_loop_is_killed() -> None:
    score, took = _score("def f(x):\n    while True:\n        pass")
    assert score == 0.0 and took < 6.0
    result = run_python_tests(
        "while True:\n    pass", ["assert True"], SandboxConfig(timeout_s=1.0)
    )
    assert result.timed_out and not result.passed


def test_write_outside_tmp_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    for body in (
        f"open({str(target)!r}, 'w').write('x')",
        f"import os\nos.close(os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT))",
        f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')",
        f"import shutil\nshutil.copyfile(__file__ if '__file__' in dir() else 'tests.py', {str(target)!r})",
    ):
        score, took = _score(body + "\ndef f(x):\n    return x * 2")
        assert score == 0.0 and took < 5.0, body
        assert not target.exists(), body
    keep = tmp_path / "keep.txt"
    keep.write_text("mine")
    assert _score(f"import os\nos.remove({str(keep)!r})\ndef f(x):\n    return x * 2")[0] == 0.0
    assert keep.read_text() == "mine"


def test_write_inside_tmp_is_allowed() -> None:
    body = "open('scratch.txt', 'w').write('ok')\ndef f(x):\n    return x * 2"
    assert _score(body)[0] == 1.0


def test_unbounded_allocation_fails_fast() -> None:
    for body in ("x = bytearray(10 ** 10)", "x = []\nwhile True:\n    x.append(' ' * 10 ** 6)"):
        score, took = _score(body + "\ndef f(x):\n    return x * 2")
        assert score == 0.0 and took < 5.0, body


@pytest.mark.parametrize(
    "body",
    [
        "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)",
        "import socket\nsocket.create_connection(('example.com', 80), timeout=1)",
        "import os\nos.kill(os.getppid(), 9)",  # the namespace's init, not the scorer
        "import os\nos.kill(1, 9)",
    ],
)
def test_network_and_parent_unreachable(body: str) -> None:
    score, took = _score(body + "\ndef f(x):\n    return x * 2")
    assert score == 0.0 and took < 5.0


@pytest.mark.parametrize(
    "body",
    [
        "import os\nos.system('echo hi')",
        "import subprocess\nsubprocess.run(['true'])",
        "import os\nif os.fork() == 0:\n    os._exit(0)",
        "import ctypes\nctypes.CDLL(None).getpid()",
    ],
)
def test_processes_and_ctypes_are_contained_not_refused(body: str) -> None:
    # OS isolation, not a Python hook: these run, inside the namespaces (see the attack tests).
    score, took = _score(body + "\ndef f(x):\n    return x * 2")
    assert score == 1.0 and took < 5.0


def test_early_exit_does_not_fake_success() -> None:
    for body in ("import os\nos._exit(0)", "import sys\nsys.exit(0)", "raise SystemExit(0)"):
        assert _score(body + "\ndef f(x):\n    return x * 2")[0] == 0.0, body


def test_main_guard_not_run_and_output_flood_contained() -> None:
    body = "def f(x):\n    return x * 2\nif __name__ == '__main__':\n    raise SystemExit(1)"
    assert _score(body)[0] == 1.0
    assert _score("print('x' * 10 ** 8)\ndef f(x):\n    return x * 2")[0] == 0.0


def test_caller_unharmed() -> None:
    cwd, env = os.getcwd(), dict(os.environ)
    _score("import os\nos.chdir('/')\nos.environ['HOME'] = '/nowhere'\ndef f(x):\n    return x * 2")
    assert os.getcwd() == cwd and dict(os.environ) == env
    # the caller can still open sockets (nothing was patched in this process)
    s = socket.socket()
    s.close()


def test_sandbox_config_validation() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        SandboxConfig(timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb.*12"):
        SandboxConfig(memory_mb=12)


def test_resource_limits_in_effect() -> None:
    cfg = SandboxConfig(timeout_s=3.0, memory_mb=256, max_file_mb=2)
    tests = [
        "import resource",
        f"assert resource.getrlimit(resource.RLIMIT_AS) == ({256 * 2**20}, {256 * 2**20})",
        f"assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] == {2 * 2**20}",
        "assert resource.getrlimit(resource.RLIMIT_CPU)[0] == 4",
        "import os",
        "assert os.path.realpath(os.getcwd()) == os.path.realpath(os.environ['HOME'])",
    ]
    result = run_python_tests("", tests, cfg)
    assert result.passed, result.stderr_tail
