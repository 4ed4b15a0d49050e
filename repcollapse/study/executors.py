"""How a study runs one CLI step (`repcollapse data|train|extract|analyze ...`): in its own
process (``subprocess_executor``, the default: the analysis steps never import torch) or in this
one (``in_process_executor``: tests inject faults inside a step). Either appends the step's
output to a log and raises ``StepFailed`` with the log's tail when the step fails.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

Executor = Callable[[list[str], Path], None]


class StepFailed(RuntimeError):
    """A CLI step exited non-zero; the message carries the tail of its log."""


def subprocess_executor(args: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    with log.open("a") as fh:
        fh.write(f"\n$ repcollapse {' '.join(args)}\n")
        fh.flush()
        proc = subprocess.run(
            [sys.executable, "-m", "repcollapse.cli.main", *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise StepFailed(f"repcollapse {args[0]} {args[1]} exited {proc.returncode}:\n{tail}")


def in_process_executor(args: list[str], log: Path) -> None:
    from repcollapse.cli.main import main

    with log.open("a") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        print(f"\n$ repcollapse {' '.join(args)}", flush=True)
        rc = main(args)
    if rc:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise StepFailed(f"repcollapse {args[0]} {args[1]} exited {rc}:\n{tail}")
