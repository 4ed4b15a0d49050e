"""The demo's console: one line per step and stage, with elapsed time and an ETA.

Every step of the demo runs as its own process whose output (progress bars included) goes to
``demo.log``; the console gets short lines from here instead:

    [demo] log: /.../demo_out/demo.log (every step's output and progress bars)
    [demo] train A: step 3/11: repcollapse train run A ...
    [demo] train A: checkpoint A/01-general written | step 2m31s | demo 3m05s | ETA ~27m
    [demo] train A: running | step 3m31s | demo 4m05s | ETA ~26m      (when quiet for a minute)
    [demo] train A: done in 9m57s | demo 10m31s | ETA ~21m

The ETA is the expected time of the steps left (``EXPECTED_S``: the demo measured on the real
corpus, 2-core CPU) scaled by how fast the steps run so far went against their expectation, so
a faster or slower machine corrects it after the first long step. Stage lines come from
watching the step's outputs: a new ``manifest.json`` under a sequence's run directory (a trained
checkpoint) and the per-checkpoint lines ``extract`` writes to the log.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from repcollapse.timefmt import fmt_duration

EXPECTED_S: dict[str, float] = {
    "data": 2,
    "base": 23,
    "train A": 280,
    "train control": 175,
    "train A_replay10": 240,
    "extract": 270,
    "validate": 11,
    "metrics": 70,
    "stats": 5,
    "figures": 5,
    "report": 5,
}
"""Seconds per step of the default demo on the real corpus, 2-core CPU: ~58 s a trained and
evaluated stage (SmolLM2 in studies/cpu-small.toml, 2026-12-06), ~21 s a checkpoint's
extraction of 48 probe records, ~5 s a checkpoint's metrics at 7 layers."""
OTHER_TRAIN_S = 450.0
"""Expected seconds of a ``train`` step of a sequence not in ``EXPECTED_S``."""
HEARTBEAT_S = 60.0
"""A ``running`` line after this many seconds without any other line."""
POLL_S = 1.0


class DemoStepError(RuntimeError):
    """A step's process failed; the message carries the log's last lines."""


def expected_seconds(step: str) -> float:
    if step in EXPECTED_S:
        return EXPECTED_S[step]
    return OTHER_TRAIN_S if step.startswith("train ") else 10.0


class Progress:
    """Console lines for a known list of steps (the ones that will run, in order)."""

    def __init__(
        self,
        steps: Sequence[str],
        *,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.steps = list(steps)
        self.out = out
        self.clock = clock
        self.t0 = clock()
        self.measured: dict[str, float] = {}

    def _print(self, line: str) -> None:
        print(line, file=self.out or sys.stdout, flush=True)

    def scale(self) -> float:
        """Measured / expected time of the steps done so far (1 until 20 expected seconds)."""
        expected = sum(expected_seconds(s) for s in self.measured)
        if expected < 20:
            return 1.0
        return sum(self.measured.values()) / expected

    def eta(self, current: str | None = None, current_elapsed: float = 0.0) -> float:
        """Seconds left: the pending steps' expected times, scaled; the current step's
        expected time less what it already took (never below zero)."""
        scale = self.scale()
        left = 0.0
        for step in self.steps:
            if step in self.measured:
                continue
            want = expected_seconds(step) * scale
            left += max(0.0, want - current_elapsed) if step == current else want
        return left

    def _tail(self, step: str | None, step_elapsed: float) -> str:
        return f"demo {fmt_duration(self.clock() - self.t0)} | ETA ~{fmt_duration(self.eta(step, step_elapsed))}"

    def log_path(self, log: Path) -> None:
        self._print(f"[demo] log: {log} (every step's output and progress bars)")

    def skipped(self, steps: Sequence[str]) -> None:
        if steps:
            self._print(f"[demo] already complete, skipped: {', '.join(steps)}")

    def start(self, step: str, command: str) -> None:
        n = self.steps.index(step) + 1 if step in self.steps else 0
        self._print(f"[demo] {step}: step {n}/{len(self.steps)}: {command}")

    def note(self, step: str, message: str, step_elapsed: float) -> None:
        self._print(
            f"[demo] {step}: {message} | step {fmt_duration(step_elapsed)} | "
            + self._tail(step, step_elapsed)
        )

    def finish(self, step: str, seconds: float) -> None:
        self.measured[step] = seconds
        self._print(f"[demo] {step}: done in {fmt_duration(seconds)} | " + self._tail(None, 0.0))


class ManifestWatch:
    """New checkpoints (``manifest.json`` files) under a sequence's run directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen = set(self._found())

    def _found(self) -> list[Path]:
        return sorted(self.root.glob("*/*/manifest.json")) if self.root.is_dir() else []

    def __call__(self) -> list[str]:
        new = [p for p in self._found() if p not in self.seen]
        self.seen.update(new)
        return [f"checkpoint {p.parent.relative_to(self.root).as_posix()} written" for p in new]


_EXTRACT_LINE = re.compile(
    r"^(?P<name>\S.*?): (?:\d+ tokens, max \|h\||complete in the store, skipped|"
    r"same weight files as .*, its data copied)"
)


class ExtractLogWatch:
    """Per-checkpoint lines ``extract`` writes to the log (after each checkpoint)."""

    def __init__(self, log: Path, total: int) -> None:
        self.log, self.total = log, total
        self.offset = log.stat().st_size if log.exists() else 0
        self.done = 0
        self._partial = ""

    def __call__(self) -> list[str]:
        with self.log.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        self.offset += len(data)
        lines = (self._partial + data.decode("utf-8", errors="replace")).split("\n")
        self._partial = lines.pop()  # an unfinished line waits for its end
        out = []
        for line in lines:
            match = _EXTRACT_LINE.match(line.rsplit("\r", 1)[-1])
            if match:
                self.done += 1
                out.append(f"checkpoint {match['name']} done ({self.done}/{self.total})")
        return out


def run_step(
    progress: Progress,
    step: str,
    command: list[str],
    shown: str,
    log: Path,
    watch: Callable[[], list[str]] | None = None,
) -> float:
    """Run one step's process with its output appended to ``log``; print its progress lines.
    Returns its seconds; raises DemoStepError with the log tail when it fails."""
    progress.start(step, shown)
    t0 = progress.clock()
    last = t0
    with log.open("a") as fh:
        fh.write(f"\n$ {shown}\n")
        fh.flush()
        proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    code = proc.wait(timeout=POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = progress.clock()
                for message in watch() if watch else []:
                    progress.note(step, message, now - t0)
                    last = now
                if now - last >= HEARTBEAT_S:
                    progress.note(step, "running", now - t0)
                    last = now
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if watch:
        for message in watch():  # lines written just before the process ended
            progress.note(step, message, progress.clock() - t0)
    seconds = progress.clock() - t0
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise DemoStepError(
            f"demo step '{step}' failed (exit {code}) after {fmt_duration(seconds)}; "
            f"full output in {log}; its last lines:\n{tail}"
        )
    progress.finish(step, seconds)
    return seconds
