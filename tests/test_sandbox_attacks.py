"""Every escape and faked score reported against the old Python-level sandbox, as a test.

Each attack body first runs ``ESCAPE``: it finds the old audit hook through ``gc`` and flips its
re-entrancy flag, which switched the old hook off. Under OS isolation there is no hook to find
and the body carries on against the namespaces, uid and mounts instead. Network attacks use a
listener on 127.0.0.1 only; process attacks are bounded (a few seconds, <= 100 processes).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

from repcollapse.train.scorers import SandboxConfig, run_python_tests, score_completion
from repcollapse.train.scorers.sandbox import bwrap_problem

pytestmark = pytest.mark.skipif(
    bwrap_problem() is not None, reason=f"bubblewrap cannot run here: {bwrap_problem()}"
)

FAST = SandboxConfig(timeout_s=4.0)
GOOD_F = "def f(x):\n    return x * 2\n"

ESCAPE = """
import gc
for _o in gc.get_objects():
    if type(_o).__name__ == 'function' and _o.__name__ == 'hook' and _o.__closure__:
        for _c in _o.__closure__:
            try:
                _v = _c.cell_contents
            except ValueError:
                continue
            if type(_v) is list and _v == [False]:
                _v[0] = True
"""


def _record(tests: list[str]) -> dict:
    return {"id": "atk", "domain": "code", "meta": {"entry_point": "f", "tests": tests}}


def _score(body: str, tests: list[str] | None = None) -> float:
    rec = _record(tests or ["assert f(2) == 4"])
    return score_completion(rec, f"```python\n{body}\n```", sandbox=FAST)


def _try(code: str) -> str:
    """``code`` wrapped so that an error is swallowed (the attack's effect is what counts)."""
    lines = "\n".join("    " + ln for ln in code.strip().splitlines())
    return f"try:\n{lines}\nexcept BaseException:\n    pass\n"


def test_dir_fd_write_outside(tmp_path: Path) -> None:
    target = tmp_path / "dirfd.txt"
    body = _try(
        f"import os\nfd = os.open({str(tmp_path)!r}, os.O_RDONLY)\n"
        "os.close(os.open('dirfd.txt', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))"
    )
    _score(body + GOOD_F)
    assert not target.exists()


def test_replaced_realpath_write_outside(tmp_path: Path) -> None:
    target = tmp_path / "realpath.txt"
    body = _try(
        f"import os\nos.path.realpath = lambda p, **k: os.getcwd()\nopen({str(target)!r}, 'w').write('x')"
    )
    _score(body + GOOD_F)
    assert not target.exists()


def test_gc_flag_flip_write_outside(tmp_path: Path) -> None:
    target = tmp_path / "gc.txt"
    _score(ESCAPE + _try(f"open({str(target)!r}, 'w').write('x')") + GOOD_F)
    assert not target.exists()
    keep = tmp_path / "keep.txt"
    keep.write_text("mine")
    _score(ESCAPE + _try(f"import os\nos.remove({str(keep)!r})") + GOOD_F)
    assert keep.read_text() == "mine"


def test_loopback_listener_unreachable() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        port = srv.getsockname()[1]
        body = _try(
            # _socket directly: the old bootstrap had replaced socket.socket & co.
            "import _socket\ns = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\n"
            f"s.settimeout(1)\ns.connect(('127.0.0.1', {port}))\ns.send(b'escaped')"
        )
        _score(ESCAPE + body + GOOD_F)
        srv.settimeout(0.5)
        with pytest.raises(TimeoutError):
            conn, _ = srv.accept()
            conn.close()


def test_ctypes_libc_write_outside(tmp_path: Path) -> None:
    target = tmp_path / "ctypes.txt"
    body = _try(
        f"import ctypes\nlibc = ctypes.CDLL(None)\nlibc.close(libc.creat({str(target).encode()!r}, 0o644))"
    )
    _score(ESCAPE + body + GOOD_F)
    assert not target.exists()


def _pids_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_setsid_child_does_not_outlive_the_scorer() -> None:
    marker = f"repcollapse-survivor-{uuid.uuid4().hex}"
    body = _try(
        "import os, sys\npid = os.fork()\nif pid == 0:\n    os.setsid()\n"
        f"    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(20)', {marker!r}])"
    )
    _score(ESCAPE + body + GOOD_F)
    time.sleep(0.3)
    survivors = _pids_with(marker)
    for pid in survivors:  # bounded clean-up of a failed run
        os.kill(pid, signal.SIGKILL)
    assert survivors == []


def test_process_count_is_limited_even_as_root() -> None:
    # Old: as root RLIMIT_NPROC is ignored, so all 100 forks succeed once the hook is off.
    body = ESCAPE + (
        "import os, time\n_n = 0\nfor _ in range(100):\n    try:\n        pid = os.fork()\n"
        "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(2)\n"
        "        os._exit(0)\n    _n += 1\n"
        "def forked():\n    return _n\n"
    )
    rec = {"id": "np", "domain": "code", "meta": {"entry_point": "forked", "tests": []}}
    rec["meta"]["tests"] = ["assert forked() < 50"]
    assert score_completion(rec, f"```python\n{body}\n```", sandbox=FAST) == 1.0


def test_uid_is_not_root_inside() -> None:
    result = run_python_tests(
        "import os\ndef uid():\n    return os.getuid()", ["assert uid() != 0"]
    )
    assert result.passed, result.stderr_tail


def test_nonce_read_through_getframe_does_not_pass() -> None:
    body = (
        "import os, sys\n_fr = sys._getframe()\nwhile _fr is not None:\n"
        "    if 'nonce' in _fr.f_locals:\n"
        "        os.write(1, ('\\n' + _fr.f_locals['nonce'] + '\\n').encode())\n"
        "        os._exit(0)\n    _fr = _fr.f_back\n"
        "def f(x):\n    return 0\n"
    )
    assert _score(body) == 0.0


def test_always_equal_object_does_not_pass() -> None:
    body = (
        "class _Eq:\n    def __eq__(self, other):\n        return True\n"
        "    def __ne__(self, other):\n        return False\n"
        "    __hash__ = None\n"
        "def f(x):\n    return _Eq()\n"
    )
    assert _score(body) == 0.0
    int_sub = "class _I(int):\n    def __eq__(self, o):\n        return True\ndef f(x):\n    return _I(0)\n"
    assert _score(int_sub) == 0.0


def test_expected_values_on_disk_are_not_readable(tmp_path: Path) -> None:
    data = tmp_path / "code.eval.jsonl"
    data.write_text(json.dumps(_record(["assert f(2) == 4"])) + "\n")
    body = (
        "import json, re\n_want = {}\n"
        + _try(
            f"for _l in open({str(data)!r}):\n"
            "    for _t in json.loads(_l)['meta']['tests']:\n"
            "        _m = re.match(r'assert f\\((.*)\\) == (.*)', _t)\n"
            "        _want[eval(_m.group(1))] = eval(_m.group(2))"
        )
        + "def f(x):\n    return _want.get(x)\n"
    )
    assert _score(body) == 0.0


def test_timeout_kills_setsid_children_too() -> None:
    marker = f"repcollapse-survivor-{uuid.uuid4().hex}"
    body = (
        "import os, sys\nif os.fork() == 0:\n    os.setsid()\n"
        f"    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(20)', {marker!r}])\n"
        "while True:\n    pass\n"
    )
    result = run_python_tests(body, ["assert True"], SandboxConfig(timeout_s=1.5))
    time.sleep(0.3)
    survivors = _pids_with(marker)
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert result.timed_out and not result.passed
    assert survivors == []


def test_scratch_space_is_bounded() -> None:
    body = (
        "import os\n_mb = 0\ntry:\n    while _mb < 200:\n"
        "        with open(f'/tmp/fill{_mb}', 'wb') as fh:\n            fh.write(b'x' * 2**20)\n"
        "        _mb += 1\nexcept OSError:\n    pass\n"
        "def written():\n    return _mb\n"
    )
    result = run_python_tests(body, ["assert written() < 65"], SandboxConfig(scratch_mb=64))
    assert result.passed, result.reason + result.stderr_tail
