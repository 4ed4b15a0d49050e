"""Run untrusted Python (model completions) against assert tests in a separate process.

Layers, outermost first:

* a fresh process (``python -I -S -B``) in a new session, so a timeout kills the whole group;
* a temporary directory as cwd, HOME and TMPDIR, removed afterwards;
* rlimits: address space (memory), CPU seconds, file size, open files, no core dumps. On
  Linux the parent applies them with ``resource.prlimit`` while the child is still blocked
  reading its nonce from stdin (before any user code), because ``preexec_fn`` is documented
  as unsafe in a multi-threaded parent (a training loop with torch threads); elsewhere they
  are set in ``preexec_fn``. The child's bootstrap also drops RLIMIT_NPROC to 0 (it must
  come after exec);
* an audit hook installed by the bootstrap before the user's code runs: refuses opening files
  for writing outside the temporary directory (and removing/renaming/chmod-ing them), any
  ``socket.*`` event, process creation (``subprocess.Popen``, ``os.system``, ``os.exec``,
  ``os.fork``, ``os.posix_spawn``...), ``ctypes``, and changing rlimits; ``socket.socket`` and
  friends are also replaced by a function that raises.

Success is a random nonce that the bootstrap prints only after every test passed, so a
program that exits 0 early does not pass. This guards against accidents and ordinary
misbehaviour of generated code; it is not a boundary against a determined attacker (use a
container for that).
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

_BOOTSTRAP = Path(__file__).with_name("_sandbox_bootstrap.py")


@dataclass(frozen=True)
class SandboxConfig:
    timeout_s: float = 5.0
    memory_mb: int = 512
    max_file_mb: int = 8
    max_open_files: int = 64

    def __post_init__(self) -> None:
        if not (isinstance(self.timeout_s, (int, float)) and 0 < self.timeout_s <= 600):
            raise ValueError(
                f"SandboxConfig.timeout_s: expected 0 < value <= 600, found {self.timeout_s!r}"
            )
        for name, lo in (("memory_mb", 64), ("max_file_mb", 1), ("max_open_files", 16)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < lo:
                raise ValueError(
                    f"SandboxConfig.{name}: expected an integer >= {lo}, found {value!r}"
                )


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    timed_out: bool
    returncode: int | None
    stderr_tail: str
    wall_s: float


def _limit_values(cfg: SandboxConfig) -> list[tuple[int, tuple[int, int]]]:
    mem = cfg.memory_mb * 1024 * 1024
    cpu = math.ceil(cfg.timeout_s) + 1
    fsize = cfg.max_file_mb * 1024 * 1024
    return [
        (resource.RLIMIT_AS, (mem, mem)),
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_FSIZE, (fsize, fsize)),
        (resource.RLIMIT_NOFILE, (cfg.max_open_files, cfg.max_open_files)),
        (resource.RLIMIT_CORE, (0, 0)),
    ]


def _preexec_limits(cfg: SandboxConfig) -> Callable[[], None]:
    values = _limit_values(cfg)  # computed before fork: the child only makes system calls

    def apply() -> None:
        for res, lim in values:
            resource.setrlimit(res, lim)

    return apply


_HAS_PRLIMIT = hasattr(resource, "prlimit")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, n: int = 4000) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - n))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def run_python_tests(
    code: str, tests: Sequence[str], cfg: SandboxConfig | None = None
) -> SandboxResult:
    """Run ``code`` then every test statement in a sandboxed child; passed iff none fails."""
    cfg = cfg or SandboxConfig()
    nonce = secrets.token_hex(16)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(
        prefix="repcollapse-sandbox-", ignore_cleanup_errors=True
    ) as tmp:
        root = Path(tmp)
        (root / "solution.py").write_text(code, encoding="utf-8")
        (root / "tests.py").write_text("\n".join(tests) + "\n", encoding="utf-8")
        (root / "_bootstrap.py").write_text(
            _BOOTSTRAP.read_text(encoding="utf-8"), encoding="utf-8"
        )
        env = {"HOME": tmp, "TMPDIR": tmp, "PATH": os.defpath, "LANG": "C.UTF-8"}
        out_path, err_path = root / "stdout.txt", root / "stderr.txt"
        timed_out = False
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", "_bootstrap.py"],
                cwd=tmp,
                env=env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=None if _HAS_PRLIMIT else _preexec_limits(cfg),
                close_fds=True,
            )
            try:
                assert proc.stdin is not None
                try:
                    if _HAS_PRLIMIT:
                        # The child waits for the nonce before running anything of the user's;
                        # if a limit cannot be applied it never gets one and exits.
                        for res, lim in _limit_values(cfg):
                            resource.prlimit(proc.pid, res, lim)
                    proc.stdin.write((nonce + "\n").encode())
                except OSError:  # child already gone, or limits refused: it fails below
                    nonce = "not-sent"
                finally:
                    with contextlib.suppress(OSError):
                        proc.stdin.close()
                proc.wait(timeout=cfg.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                # Also reaps anything the child might have left in its group.
                _kill_group(proc)
        stdout = _tail(out_path, 200)
        stderr = _tail(err_path)
    lines = stdout.strip().splitlines()
    passed = not timed_out and proc.returncode == 0 and bool(lines) and lines[-1].strip() == nonce
    return SandboxResult(passed, timed_out, proc.returncode, stderr, time.monotonic() - start)
