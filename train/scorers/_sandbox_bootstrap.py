"""Child-side bootstrap of the code sandbox (copied into the temporary directory and run as
``python -I -S -B _bootstrap.py``). Installs guards, then runs solution.py and tests.py.

Not imported by the scorer process; it only ever runs in the sandboxed child.
"""

import os
import sys


def _main() -> None:
    nonce = sys.stdin.readline().strip()
    if not nonce:  # the parent could not apply the resource limits: run nothing
        os._exit(3)
    root = os.path.realpath(os.getcwd())
    with open("solution.py", encoding="utf-8") as fh:
        code = fh.read()
    with open("tests.py", encoding="utf-8") as fh:
        tests = fh.read()

    try:  # no new processes (ignored for root, where the audit hook below still applies)
        import resource

        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    except (ImportError, OSError, ValueError):
        pass

    import socket

    def _no_network(*args, **kwargs):
        raise PermissionError("sandbox: network access is disabled")

    for name in (
        "socket",
        "create_connection",
        "create_server",
        "socketpair",
        "fromfd",
        "getaddrinfo",
        "gethostbyname",
        "gethostbyname_ex",
        "gethostbyaddr",
    ):
        if hasattr(socket, name):
            setattr(socket, name, _no_network)

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    blocked = {
        "os.system",
        "subprocess.Popen",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "os.kill",
        "os.killpg",
        "os.startfile",
        "pty.spawn",
        "webbrowser.open",
        "resource.setrlimit",
        "resource.prlimit",
        "sys.addaudithook",
        "os.add_dll_directory",
    }
    blocked_prefixes = (
        "socket.",
        "ctypes.",
        "urllib.",
        "ftplib.",
        "http.",
        "smtplib.",
        "telnetlib.",
        "imaplib.",
        "nntplib.",
        "poplib.",
    )
    denied_imports = {"ctypes", "_ctypes", "_posixsubprocess", "_socket"}
    # Number of leading path arguments each file-system event carries.
    path_events = {
        "os.remove": 1,
        "os.rmdir": 1,
        "os.mkdir": 1,
        "os.chmod": 1,
        "os.chown": 1,
        "os.chflags": 1,
        "os.lchmod": 1,
        "os.lchown": 1,
        "os.truncate": 1,
        "os.utime": 1,
        "os.setxattr": 1,
        "os.removexattr": 1,
        "os.rename": 2,
        "os.link": 2,
        "os.symlink": 2,
        "shutil.rmtree": 1,
        "shutil.copyfile": 2,
        "shutil.copytree": 2,
        "shutil.move": 2,
        "shutil.chown": 1,
        "os.mkfifo": 1,
        "os.mknod": 1,
    }
    busy = [False]

    def inside(path) -> bool:
        if isinstance(path, int):
            return True  # an already-open descriptor
        p = os.path.realpath(os.fsdecode(path))
        return p == root or p.startswith(root + os.sep)

    def refuse(event):
        raise PermissionError(f"sandbox: {event} is not allowed")

    def hook(event, args):
        if busy[0]:
            return
        busy[0] = True
        try:
            if event in blocked or event.startswith(blocked_prefixes):
                refuse(event)
            if event == "open":
                path, mode, flags = (tuple(args) + (None, None, None))[:3]
                writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                    isinstance(flags, int) and bool(flags & write_flags)
                )
                if writing and path is not None and not inside(path):
                    refuse(f"writing {path!r}")
            elif event in path_events:
                for p in args[: path_events[event]]:
                    if isinstance(p, (str, bytes, os.PathLike)) and not inside(p):
                        refuse(f"{event} on {p!r}")
            elif event == "import" and args and str(args[0]).split(".")[0] in denied_imports:
                refuse(f"importing {args[0]}")
        finally:
            busy[0] = False

    sys.addaudithook(hook)
    # Stays open for the life of the child: user code may read stdin and must see EOF.
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        exec(compile(code, "solution.py", "exec"), namespace)
        exec(compile(tests, "tests.py", "exec"), namespace)
        sys.stdout.flush()
    except BaseException as exc:  # SystemExit and KeyboardInterrupt are failures too
        try:
            sys.stderr.write(f"sandbox: {type(exc).__name__}: {exc}\n"[:4000])
            sys.stderr.flush()
        finally:
            os._exit(1)
    # Written past any user-replaced sys.stdout; the caller checks it is the last line.
    os.write(1, ("\n" + nonce + "\n").encode())
    os._exit(0)


_main()
