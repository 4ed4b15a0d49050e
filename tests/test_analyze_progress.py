"""The progress of `analyze metrics`: a count of units known up front (every task of every
pass, then the function and the LoRA stage), reported as fn(done, total) with done rising to
total; the bar on stderr (tqdm: count, elapsed, ETA); nothing with --no-progress."""

from __future__ import annotations

import io
from pathlib import Path

import distributed
import pytest
from test_analyze_support import store_with

from repcollapse.analyze.engine.progress import ConsoleBar, Progress, bar_wanted
from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.analyze.options import Options
from repcollapse.cli.main import main
from repcollapse.store_schema.testing import SyntheticSpec

SPEC = SyntheticSpec(n_checkpoints=3, n_layers=2, n_tokens=240, n_features=8, token_chunk=96)
CHUNKS = 3  # 240 tokens in chunks of 96


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return store_with(tmp_path_factory.mktemp("progress") / "s.zarr", SPEC)


def _record(store: Path, out: Path, **kw: object) -> tuple[list[tuple[int, int]], object]:
    calls: list[tuple[int, int]] = []
    summary = run_metrics(
        store, out, progress=lambda d, t: calls.append((d, t)), log=lambda m: None, **kw
    )
    return calls, summary


def _check_monotone(calls: list[tuple[int, int]]) -> int:
    assert calls, "the progress function was never called"
    totals = {t for _, t in calls}
    assert len(totals) == 1, f"the total changed during the run: {sorted(totals)}"
    total = totals.pop()
    done = [d for d, _ in calls]
    assert done[0] == 0, "the first call must announce the total before any work"
    assert all(a <= b for a, b in zip(done, done[1:], strict=False)), done
    assert done[-1] == total, (done[-1], total)
    return total


@pytest.mark.parametrize("sched", ["threads", "sync"])
def test_count_rises_task_by_task_to_the_total(store: Path, tmp_path: Path, sched: str) -> None:
    calls, summary = _record(store, tmp_path / "t", scheduler_address=sched)
    total = _check_monotone(calls)
    # per pass (one layer, all 3 checkpoints in one group): init, a fold per chunk, finish,
    # the second (centered) fold per chunk, results, one derive per target; + function, LoRA
    per_pass = 1 + CHUNKS + 1 + CHUNKS + 1 + SPEC.n_checkpoints
    assert summary.passes == SPEC.n_layers
    assert total == summary.passes * per_pass + 2
    # counted task by task (a local scheduler runs the callback), not batch by batch
    assert len({d for d, _ in calls}) == total + 1


def test_temperature_passes_are_counted_up_front(store: Path, tmp_path: Path) -> None:
    """--temperature reads the last layer of every checkpoint and multiplies by the
    unembedding: its tasks (a part per chunk and their sum, per checkpoint) are in the total."""
    calls, summary = _record(
        store, tmp_path / "t", scheduler_address="threads", options=Options(temperatures=(2.0,))
    )
    per_pass = 1 + CHUNKS + 1 + CHUNKS + 1 + SPEC.n_checkpoints
    temperature = SPEC.n_checkpoints * (CHUNKS + 1)
    assert _check_monotone(calls) == summary.passes * per_pass + temperature + 1 + 1
    assert any(m.startswith("entropy@T2") for _, m, _ in summary.computed)


def test_cached_rerun_counts_the_two_stages(store: Path, tmp_path: Path) -> None:
    _record(store, tmp_path / "t", scheduler_address="sync")
    calls, summary = _record(store, tmp_path / "t", scheduler_address="sync")
    assert summary.passes == 0 and _check_monotone(calls) == 2


def test_distributed_count_reaches_the_total(store: Path, tmp_path: Path) -> None:
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        calls, summary = _record(store, tmp_path / "t", scheduler_address=cluster.scheduler_address)
    assert _check_monotone(calls) == summary.passes * (6 + 2 * CHUNKS) + 2


def test_console_bar_shows_count_elapsed_and_eta() -> None:
    stream = io.StringIO()
    bar = ConsoleBar(stream)
    progress = Progress(bar)
    progress.plan(4)
    progress.advance()
    progress.reach(4)
    text = stream.getvalue()
    assert "0/4 tasks" in text and "4/4 tasks" in text and "100%" in text
    assert "[00:00<" in text  # elapsed < remaining
    assert text.endswith("\n") and bar._bar is None  # closed at the total


def test_bar_only_on_a_terminal_unless_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm")
    assert bar_wanted(None, Tty()) and not bar_wanted(None, io.StringIO())
    assert bar_wanted(True, io.StringIO()) and not bar_wanted(False, Tty())
    monkeypatch.setenv("TERM", "dumb")
    assert not bar_wanted(None, Tty())


def _cli(store: Path, out: Path, *extra: str) -> list[str]:
    return ["analyze", "metrics", str(store), "--out", str(out), "--recompute", *extra]


def test_cli_no_progress_prints_neither_bar_nor_batch_lines(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_cli(store, tmp_path / "t", "--no-progress")) == 0
    err = capsys.readouterr().err
    assert "wrote " in err  # the run's summary line stays
    assert "tasks" not in err and "%|" not in err and "\r" not in err, err
    assert "target pass(es)" not in err, err


def test_cli_progress_forced_and_default_off_a_terminal(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_cli(store, tmp_path / "t", "--progress")) == 0
    err = capsys.readouterr().err
    assert "100%" in err and "tasks" in err and "target pass(es)" not in err, err
    assert main(_cli(store, tmp_path / "t")) == 0  # captured stderr is no terminal: log lines
    err = capsys.readouterr().err
    assert "%|" not in err and "target pass(es)" in err, err
