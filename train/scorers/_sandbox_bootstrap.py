"""Child side of the code sandbox, run as ``python -I -S -B _bootstrap.py INPUT_DIR``.

Not imported by the scorer. It sets the resource limits (before any untrusted code runs, so
the code cannot raise them), runs solution.py, then the program's steps: ``exec`` set-up
statements, and ``eval`` expressions whose values it writes to its original stdout as tagged
JSON. It decides nothing: it never sees expected values, and whatever it (or code that
replaced it) writes is only data that the parent decodes and compares
(``train.scorers.checks``). Confinement is the job of the OS layer around it, not this file.
"""

import json
import os
import resource
import sys


def _encode(value, depth=0):
    # Exact types only: a subclass (an int whose __eq__ is always true) is not plain data.
    if depth > 100:
        raise ValueError("value nested too deeply")
    t = type(value)
    if value is None or t is bool or t is int or t is str:
        return value
    if t is float:
        return {"f": repr(value)}
    if t is complex:
        return {"c": [repr(value.real), repr(value.imag)]}
    if t is bytes:
        return {"b": value.hex()}
    if t is list:
        return [_encode(v, depth + 1) for v in value]
    if t in (tuple, set, frozenset):
        tag = {tuple: "t", set: "s", frozenset: "fs"}[t]
        return {tag: [_encode(v, depth + 1) for v in value]}
    if t is dict:
        return {"d": [[_encode(k, depth + 1), _encode(v, depth + 1)] for k, v in value.items()]}
    raise TypeError(f"{t.__name__} is not plain data")


def _main() -> None:
    indir = sys.argv[1]
    with open(os.path.join(indir, "program.json"), encoding="utf-8") as fh:
        program = json.load(fh)
    with open(os.path.join(indir, "solution.py"), encoding="utf-8") as fh:
        code = fh.read()
    uid = program["drop_to"]
    if uid is not None:  # the scorer is root: become nobody, with no groups and no caps
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if os.getresuid() != (uid, uid, uid) or os.getgroups():
            os._exit(4)
    for name, soft, hard in program["limits"]:
        resource.setrlimit(getattr(resource, name), (soft, hard))
    # Our own copy of stdout for the values; fd 1 becomes stderr, so the code's prints cannot
    # corrupt the report of a correct solution.
    out = os.dup(1)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 (code that reads sees EOF)
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    values = []
    try:
        exec(compile(code, "solution.py", "exec"), namespace)
        for step in program["steps"]:
            if "exec" in step:
                exec(compile(step["exec"], "tests.py", "exec"), namespace)
                continue
            try:
                value = eval(compile(step["eval"], "tests.py", "eval"), namespace)
                values.append(["ok", _encode(value)])
            except Exception as exc:  # a failing call fails its check, not the others
                values.append(["raised", type(exc).__name__])
        sys.stdout.flush()
        report = json.dumps({"values": values}).encode()
    except BaseException as exc:  # SystemExit and KeyboardInterrupt are failures too
        try:
            sys.stderr.write(f"sandbox: {type(exc).__name__}: {exc}\n"[:4000])
            sys.stderr.flush()
        finally:
            os._exit(1)
    view = memoryview(report)
    while view:
        view = view[os.write(out, view) :]
    os._exit(0)


_main()
