"""The OS boundary around sandboxed code: a bubblewrap (``bwrap``) command line.

What the child gets (see docs/sandbox.md for the threat model):

* new pid, network, mount, ipc, uts (and cgroup) namespaces: only a loopback device of its
  own, so no listener of the host (127.0.0.1 included) is reachable;
* an unprivileged uid on the host: as root, the bootstrap's first act is to drop to nobody
  (65534); otherwise the caller's own uid in a new user namespace;
* a read-only view of the system directories and the Python installation only; the
  repository, the data and every home directory are simply absent;
* a private, size-limited tmpfs as cwd, HOME and TMPDIR, and the inputs read-only in /sandbox;
* ``--die-with-parent`` and a pid namespace: when the scorer kills the namespace's init (or
  dies), the kernel kills every process in it, ``setsid()`` children included.
"""

from __future__ import annotations

import functools
import marshal
import os
import shutil
import subprocess
import sys
from pathlib import Path

NOBODY = 65534
INPUT_MOUNT = "/sandbox"
SCRATCH = "/tmp"
SYSTEM_DIRS = ("/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc/ld.so.cache")


def find_bwrap() -> str | None:
    return shutil.which("bwrap")


def interpreter() -> tuple[str, str]:
    """(real path of the Python executable, its installation prefix) for the child."""
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    return exe, os.path.realpath(sys.base_prefix)


def drop_to_nobody() -> bool:
    """Whether the child must drop to nobody itself (the scorer is root; see _namespaces)."""
    return os.geteuid() == 0


def _namespaces() -> list[str]:
    if drop_to_nobody():
        # Root: no user namespace (in one, bwrap's --uid 65534 maps back to host root, and
        # bwrap run as nobody could not reach an interpreter under /root). bwrap keeps only
        # CAP_SETUID/CAP_SETGID; the bootstrap's setresuid(65534) clears them, and
        # no_new_privs (always set by bwrap) stops setuid binaries regaining any.
        return [
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try",
            "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
        ]  # fmt: skip
    # Not root: an unprivileged user namespace (required, not -try), no nested ones.
    return ["--unshare-all", "--unshare-user", "--disable-userns"]


def bwrap_command(bwrap: str, input_dir: Path, scratch_bytes: int, info_fd: int) -> list[str]:
    exe, prefix = interpreter()
    mounts: list[str] = []
    bound: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin must stay a link
            mounts += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            mounts += ["--ro-bind", path, path]
            bound.append(path)
    if not any(prefix == b or prefix.startswith(b + "/") for b in bound):
        # bwrap would create the parents (/root, /root/.pyenv...) 0700 root, closed to nobody.
        parents = list(Path(prefix).parents)[-2::-1]
        for parent in parents:
            mounts += ["--perms", "0755", "--dir", str(parent)]
        mounts += ["--ro-bind", prefix, prefix]
    return [
        bwrap,
        *_namespaces(),
        "--die-with-parent",
        "--new-session",
        "--hostname", "sandbox",
        *mounts,
        "--ro-bind", str(input_dir), INPUT_MOUNT,
        "--proc", "/proc",
        "--dev", "/dev",
        "--perms", "1777",  # bwrap (root) creates it; the child (nobody) writes in it
        "--size", str(scratch_bytes),
        "--tmpfs", SCRATCH,
        "--chdir", SCRATCH,
        "--clearenv",
        "--setenv", "HOME", SCRATCH,
        "--setenv", "TMPDIR", SCRATCH,
        "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "LANG", "C.UTF-8",
        "--info-fd", str(info_fd),
        "--",
        exe, "-I", "-S", "-B", f"{INPUT_MOUNT}/_bootstrap.py", INPUT_MOUNT,
    ]  # fmt: skip


@functools.lru_cache(maxsize=4)
def _probe(bwrap: str | None) -> str | None:
    if bwrap is None:
        return "no 'bwrap' on PATH (install the Debian/Ubuntu package 'bubblewrap')"
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        # The real bootstrap with nothing to run: checks the namespaces, the mounts and (as
        # root) the drop to nobody, whose failure would otherwise read as failing code.
        boot = Path(__file__).with_name("_sandbox_bootstrap.py").read_text(encoding="utf-8")
        Path(tmp, "_bootstrap.py").write_text(boot, encoding="utf-8")
        Path(tmp, "solution.py").write_text("", encoding="utf-8")
        program = {"limits": [], "steps": [], "drop_to": NOBODY if drop_to_nobody() else None}
        Path(tmp, "program.marshal").write_bytes(marshal.dumps(program))
        r, w = os.pipe()
        try:
            proc = subprocess.run(
                bwrap_command(bwrap, Path(tmp), 1 << 20, w),
                capture_output=True,
                timeout=30,
                pass_fds=(w,),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{bwrap} could not be started: {exc}"
        finally:
            os.close(r)
            os.close(w)
    if proc.returncode != 0 or proc.stdout != b'{"values":[]}':
        err = proc.stderr.decode("utf-8", "replace").strip()[-300:]
        return f"{bwrap} failed (exit {proc.returncode}): {err or proc.stdout[:200]!r}"
    return None


def bwrap_problem() -> str | None:
    """None when bubblewrap runs the sandbox here, else why not (cached per process)."""
    return _probe(find_bwrap())
