"""Progress of an analysis run: a count of units of work known before the first is computed.

The runner builds every pass graph before computing any (``moment_stage.moment_metrics``), so the
total is the number of dask tasks of all passes, plus the tasks of the ``--temperature`` passes
(a part per token chunk and their sum, per checkpoint and temperature that will run), plus one
unit for the stored (T = 1) function metrics and one for the LoRA metrics (small next to the
passes, which read every layer).
``Progress`` turns task completions into calls ``fn(done, total)`` with ``done`` rising to
``total``; ``console_bar`` is such an ``fn``: a tqdm bar on stderr with elapsed time and ETA.

Task completions are counted by a dask local-scheduler callback (threads, sync), in the thread
that runs the scheduler loop. A dask.distributed client runs no local callbacks, so there the
count advances as each batch of passes finishes; a batch's tasks are counted in full when it
returns either way, so the count reaches the total exactly whatever dask fused or culled.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from dask.callbacks import Callback

ProgressFn = Callable[[int, int], None]
"""Called as ``fn(done, total)``: ``done`` never decreases and ends equal to ``total``."""


class Progress:
    """The run's unit count; every change is reported to ``fn`` (none when ``fn`` is None)."""

    def __init__(self, fn: ProgressFn | None) -> None:
        self.fn = fn
        self.total = 0
        self.done = 0

    def plan(self, total: int) -> None:
        """Set the total (before any unit is done)."""
        self.total = int(total)
        self._report()

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        self._report()

    def reach(self, done: int) -> None:
        """At least ``done`` units are finished (a batch's end: its count is exact)."""
        if done > self.done:
            self.done = min(self.total, done)
            self._report()

    def _report(self) -> None:
        if self.fn is not None:
            self.fn(self.done, self.total)

    @contextlib.contextmanager
    def counting_tasks(self, limit: int) -> Iterator[None]:
        """Advance by one per finished dask task of local-scheduler computes inside the block,
        up to ``limit`` units above the count at entry (the block's own task count)."""
        stop = self.done + limit
        if self.fn is None:
            yield
            return

        def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if self.done < stop:
                self.advance()

        with Callback(posttask=posttask):
            yield


def stderr_is_tty(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def bar_wanted(flag: bool | None, stream: TextIO | None = None) -> bool:
    """``flag`` True/False: on/off; None: on when the stream is a terminal (not a log file or a
    pipe, where a bar's carriage returns are noise) and $TERM is not 'dumb'."""
    if flag is not None:
        return flag
    return stderr_is_tty(stream) and os.environ.get("TERM", "") != "dumb"


class ConsoleBar:
    """A tqdm bar of the run's units: count, percent, elapsed and ETA, on ``stream``."""

    def __init__(self, stream: TextIO | None = None, desc: str = "analyze") -> None:
        self.stream = stream or sys.stderr
        self.desc = desc
        self._bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(
                total=total,
                desc=self.desc,
                unit="task",
                file=self.stream,
                dynamic_ncols=True,
                # one refresh a second at most: the count moves once per chunk step
                mininterval=1.0,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} tasks "
                "[{elapsed}<{remaining}]",
            )
        if total != self._bar.total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
