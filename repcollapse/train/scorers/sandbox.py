"""Run untrusted Python (model completions) against assert tests, and decide in this process.

Two layers (docs/sandbox.md has the threat model):

* confinement by the OS (``repcollapse.train.scorers.isolation``): bubblewrap namespaces, no network,
  unprivileged uid, read-only system view, private tmpfs, a pid namespace killed as a whole;
  resource limits (memory, CPU, file size, open files, processes) set by the child's bootstrap
  before any untrusted code runs;
* a verdict from plain data (``repcollapse.train.scorers.checks``): the child receives the code and the
  expressions to evaluate, never the expected values, and reports values as tagged JSON that
  this process decodes and compares. No flag, nonce or object of the child's decides a score.

Without a working bwrap the scorer refuses (``SandboxUnavailable``) unless the caller opts into
``isolation="process"`` (or ``REPCOLLAPSE_SANDBOX=process``): a plain child process with the
same limits and verdict, which is NOT a boundary.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from repcollapse.train.scorers import isolation
from repcollapse.train.scorers.checks import Plan, plan_tests, verdict
from repcollapse.train.scorers.isolation import bwrap_problem

__all__ = [
    "SandboxConfig",
    "SandboxResult",
    "SandboxUnavailable",
    "bwrap_problem",
    "run_python_tests",
]

_BOOTSTRAP = Path(__file__).with_name("_sandbox_bootstrap.py")
ISOLATIONS = ("bwrap", "process")
_MAX_REPORT = 16 * 1024 * 1024


class SandboxUnavailable(OSError):
    """bubblewrap cannot run here and the caller did not opt into the unsafe process mode
    (an OSError: a problem of the machine, reported by the CLI as one line)."""


def _default_isolation() -> str:
    return os.environ.get("REPCOLLAPSE_SANDBOX", "bwrap")


@dataclass(frozen=True)
class SandboxConfig:
    timeout_s: float = 5.0
    memory_mb: int = 512
    max_file_mb: int = 8
    max_open_files: int = 64
    max_processes: int = 32
    scratch_mb: int = 64
    isolation: str = field(default_factory=_default_isolation)

    def __post_init__(self) -> None:
        if not (isinstance(self.timeout_s, (int, float)) and 0 < self.timeout_s <= 600):
            raise ValueError(
                f"SandboxConfig.timeout_s: expected 0 < value <= 600, found {self.timeout_s!r}"
            )
        for name, lo in (
            ("memory_mb", 64),
            ("max_file_mb", 1),
            ("max_open_files", 16),
            ("max_processes", 1),
            ("scratch_mb", 1),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < lo:
                raise ValueError(
                    f"SandboxConfig.{name}: expected an integer >= {lo}, found {value!r}"
                )
        if self.isolation not in ISOLATIONS:
            raise ValueError(
                f"SandboxConfig.isolation (or REPCOLLAPSE_SANDBOX): expected one of "
                f"{', '.join(ISOLATIONS)}, found {self.isolation!r}"
            )


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    timed_out: bool
    returncode: int | None
    stderr_tail: str
    wall_s: float
    reason: str = ""


def _limits(cfg: SandboxConfig) -> list[list[object]]:
    mem = cfg.memory_mb * 1024 * 1024
    cpu = math.ceil(cfg.timeout_s) + 1
    fsize = cfg.max_file_mb * 1024 * 1024
    nofile, nproc = cfg.max_open_files, cfg.max_processes
    return [
        ["RLIMIT_AS", mem, mem],
        ["RLIMIT_CPU", cpu, cpu + 1],
        ["RLIMIT_FSIZE", fsize, fsize],
        ["RLIMIT_NOFILE", nofile, nofile],
        ["RLIMIT_CORE", 0, 0],
        ["RLIMIT_NPROC", nproc, nproc],
    ]


def _tail(path: Path, n: int) -> bytes:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - n))
            return fh.read()
    except OSError:
        return b""


def _read_info(fd: int, deadline: float) -> int | None:
    """A pidfd of the namespace's init (its host pid comes on bwrap's --info-fd), or None.
    A pidfd, not the pid: killing a pid later could hit an unrelated process reusing it."""
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
        with contextlib.suppress(ValueError):
            pid = int(json.loads(buf)["child-pid"])
            try:
                return os.pidfd_open(pid)
            except OSError:  # already gone: nothing left to kill
                return None
    return None


def _start(cfg: SandboxConfig, indir: Path, out, err) -> tuple[subprocess.Popen[bytes], int | None]:
    """Start the child; returns it and the pid to SIGKILL for a clean end (namespace init)."""
    if cfg.isolation == "process":
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", str(indir / "_bootstrap.py"), str(indir)],
            cwd=indir.parent / "work",
            env={"HOME": str(indir.parent / "work"), "TMPDIR": str(indir.parent / "work"),
                 "PATH": os.defpath, "LANG": "C.UTF-8"},  # fmt: skip
            stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True, close_fds=True,
        )  # fmt: skip
        return proc, None
    problem = bwrap_problem()
    if problem is not None:
        raise SandboxUnavailable(
            f"code sandbox: bubblewrap cannot run ({problem}); refusing to run untrusted code. "
            "Install bubblewrap, or set REPCOLLAPSE_SANDBOX=process (or "
            "SandboxConfig(isolation='process')) to accept running it WITHOUT a boundary."
        )
    r, w = os.pipe()
    bwrap = isolation.find_bwrap()
    assert bwrap is not None
    argv = isolation.bwrap_command(bwrap, indir, cfg.scratch_mb << 20, w)
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, close_fds=True,
            pass_fds=(w,),
        )  # fmt: skip
    finally:
        os.close(w)
    try:
        init = _read_info(r, time.monotonic() + cfg.timeout_s)
    finally:
        os.close(r)
    return proc, init


def _end(proc: subprocess.Popen[bytes], init: int | None) -> None:
    """Kill what is left: the pid namespace's init (the kernel then kills every process in
    the namespace, setsid ones included), else the child's process group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if init is not None:
            signal.pidfd_send_signal(init, signal.SIGKILL)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
    if init is not None:
        os.close(init)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


def run_python_tests(
    code: str, tests: Sequence[str] | Plan, cfg: SandboxConfig | None = None
) -> SandboxResult:
    """Run ``code`` in the sandbox, evaluate the tests' calls there, and decide here whether
    every assert holds. Raises CheckError for tests that cannot be decided outside the child,
    SandboxUnavailable when bwrap cannot run and the process mode was not chosen."""
    cfg = cfg or SandboxConfig()
    plan = tests if isinstance(tests, Plan) else plan_tests(tests)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="repcollapse-sandbox-") as tmp:
        indir, work = Path(tmp, "in"), Path(tmp, "work")
        indir.mkdir(mode=0o755)
        work.mkdir(mode=0o700)
        os.chmod(indir, 0o755)  # readable by nobody: only the bind mount reaches it
        # surrogatepass: a lone surrogate must fail in the child (unreadable code), not here.
        (indir / "solution.py").write_text(code, encoding="utf-8", errors="surrogatepass")
        program = {
            "limits": _limits(cfg),
            "steps": plan.child_program(),
            # In bwrap as root the bootstrap drops to nobody before anything else. Not in the
            # unsafe process mode: there nobody could not even reach an interpreter in /root.
            "drop_to": (
                isolation.NOBODY
                if cfg.isolation == "bwrap" and isolation.drop_to_nobody()
                else None
            ),
        }
        (indir / "program.marshal").write_bytes(marshal.dumps(program))
        (indir / "_bootstrap.py").write_text(_BOOTSTRAP.read_text(encoding="utf-8"), "utf-8")
        out_path, err_path = Path(tmp, "stdout"), Path(tmp, "stderr")
        timed_out = False
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc, init = _start(cfg, indir, out, err)
            try:
                proc.wait(timeout=max(0.1, cfg.timeout_s - (time.monotonic() - start)))
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _end(proc, init)
        size = out_path.stat().st_size
        report = _tail(out_path, _MAX_REPORT).decode("utf-8", "replace")
        stderr = _tail(err_path, 4000).decode("utf-8", "replace")
    if timed_out:
        passed, reason = False, f"timed out after {cfg.timeout_s} s"
    elif proc.returncode != 0:
        passed, reason = False, f"child exited with {proc.returncode}"
    elif size > _MAX_REPORT:
        passed, reason = False, f"child report too large ({size} bytes)"
    else:
        passed, reason = verdict(plan, report)
    return SandboxResult(
        passed, timed_out, proc.returncode, stderr, time.monotonic() - start, reason
    )
