"""Child side of the code sandbox, run as ``python -I -S -B _bootstrap.py INPUT_DIR``.

Not imported by the scorer. It sets the resource limits (before any untrusted code runs, so
the code cannot raise them), runs solution.py, then the program's steps: ``exec`` set-up
statements, and ``eval`` expressions whose values it writes to its original stdout as tagged
JSON. It decides nothing: it never sees expected values, and whatever it (or code that
replaced it) writes is only data that the parent decodes and compares
(``repcollapse.train.scorers.checks``). Confinement is the job of the OS layer around it, not this file.

No ``json`` import: it pulls in ``re`` and cost ~30-50 ms a call on the development machine;
the program arrives as ``marshal`` (written by the trusted parent; the parent never unmarshals
anything from the child), and the values are written by ``_encode`` below.
"""

import marshal
import os
import resource
import sys


def _encode(value, out, depth=0):
    """Appends tagged JSON text of ``value`` to ``out``. Exact types only: a subclass (an int
    whose __eq__ is always true) is not plain data. Strings travel as UTF-8 hex, so no JSON
    escaping is needed."""
    if depth > 100:
        raise ValueError("value nested too deeply")
    t = type(value)
    if value is None:
        out.append("null")
    elif t is bool:
        out.append("true" if value else "false")
    elif t is int:
        out.append(int.__repr__(value))
    elif t is float:
        out.append('{"f":"' + float.__repr__(value) + '"}')
    elif t is complex:
        re, im = float.__repr__(value.real), float.__repr__(value.imag)
        out.append('{"c":["' + re + '","' + im + '"]}')
    elif t is str:
        out.append('{"x":"' + value.encode("utf-8", "surrogatepass").hex() + '"}')
    elif t is bytes:
        out.append('{"b":"' + value.hex() + '"}')
    elif t is list or t is tuple or t is set or t is frozenset:
        tag = {list: None, tuple: "t", set: "s", frozenset: "fs"}[t]
        out.append("[" if tag is None else '{"' + tag + '":[')
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out, depth + 1)
        out.append("]" if tag is None else "]}")
    elif t is dict:
        out.append('{"d":[')
        for i, (k, v) in enumerate(value.items()):
            out.append("," if i else "")
            out.append("[")
            _encode(k, out, depth + 1)
            out.append(",")
            _encode(v, out, depth + 1)
            out.append("]")
        out.append("]}")
    else:
        raise TypeError(f"{t.__name__} is not plain data")


def _main() -> None:
    indir = sys.argv[1]
    with open(os.path.join(indir, "program.marshal"), "rb") as fh:
        program = marshal.loads(fh.read())
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
                text = ['["ok",']
                _encode(value, text)
                values.append("".join(text) + "]")
            except Exception:  # a failing call fails its check, not the others
                values.append('["raised"]')
        sys.stdout.flush()
        report = ('{"values":[' + ",".join(values) + "]}").encode()
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
