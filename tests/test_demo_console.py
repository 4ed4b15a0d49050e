"""What the demo prints: the log path first, one line per step and per checkpoint with elapsed
time and ETA, errors on stderr; and ``repcollapse --version``. Every step here is a real
subprocess of a few lines of Python instead of the CLI step, so this runs in seconds."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import repcollapse
from repcollapse.cli import demo, demo_progress
from repcollapse.cli.demo_progress import (
    DemoStepError,
    ExtractLogWatch,
    ManifestWatch,
    Progress,
    fmt_duration,
    run_step,
)
from repcollapse.cli.main import main


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"repcollapse {repcollapse.__version__}"
    from importlib.metadata import version

    assert version("repcollapse") == repcollapse.__version__


def test_version_from_the_installed_command() -> None:
    exe = Path(sys.executable).with_name("repcollapse")
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == f"repcollapse {repcollapse.__version__}"


def test_fmt_duration() -> None:
    assert [fmt_duration(s) for s in (0, 42.4, 60, 597, 3725)] == [
        "0s",
        "42s",
        "1m00s",
        "9m57s",
        "1h02m",
    ]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_eta_scales_the_expected_times_by_the_measured_ones() -> None:
    clock, out = Clock(), io.StringIO()
    steps = ["base", "train A", "extract"]
    p = Progress(steps, out=out, clock=clock)
    expected = sum(demo_progress.EXPECTED_S[s] for s in steps)
    assert p.eta() == pytest.approx(expected)
    # base took twice its expectation: what is left is expected twice as long too
    clock.t = 2 * demo_progress.EXPECTED_S["base"]
    p.finish("base", clock.t)
    left = 2 * (demo_progress.EXPECTED_S["train A"] + demo_progress.EXPECTED_S["extract"])
    assert p.eta() == pytest.approx(left)
    # 100 s into train A, its expected remainder shrinks by 100 s
    assert p.eta("train A", 100.0) == pytest.approx(left - 100.0)
    # a step past its expectation counts zero, not a negative time
    assert p.eta("train A", 1e6) == pytest.approx(2 * demo_progress.EXPECTED_S["extract"])
    line = out.getvalue().strip()
    assert line == f"[demo] base: done in 46s | demo 46s | ETA ~{fmt_duration(left)}"


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "step.py"
    path.write_text(body)
    return [sys.executable, str(path)]


def test_run_step_prints_checkpoints_and_heartbeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo_progress, "POLL_S", 0.05)
    monkeypatch.setattr(demo_progress, "HEARTBEAT_S", 0.3)
    runs = tmp_path / "runs" / "A"
    log = tmp_path / "demo.log"
    cmd = _script(
        tmp_path,
        "import pathlib, sys, time\n"
        f"root = pathlib.Path({str(runs)!r})\n"
        "for stage in ('01-general', '02-math'):\n"
        "    d = root / 'A' / stage\n"
        "    d.mkdir(parents=True)\n"
        "    (d / 'manifest.json').write_text('{}')\n"
        "    print('progress bar\\r50%\\r100%', file=sys.stderr, flush=True)\n"
        "    time.sleep(0.4)\n"
        "time.sleep(0.5)\n",
    )
    out = io.StringIO()
    progress = Progress(["train A", "extract"], out=out)
    seconds = run_step(
        progress, "train A", cmd, "repcollapse train run A", log, ManifestWatch(runs)
    )
    lines = out.getvalue().splitlines()
    assert lines[0] == "[demo] train A: step 1/2: repcollapse train run A"
    stage = [x for x in lines if "written" in x]
    assert [x.split(" | ")[0] for x in stage] == [
        "[demo] train A: checkpoint A/01-general written",
        "[demo] train A: checkpoint A/02-math written",
    ]
    assert any(x.startswith("[demo] train A: running | step ") for x in lines)
    assert re.fullmatch(r"\[demo\] train A: done in \d+s \| demo \d+s \| ETA ~\d+s", lines[-1])
    for line in lines[1:]:
        assert " | demo " in line and " | ETA ~" in line, line
    assert seconds >= 1.0
    # the step's own output went to the log, not the console
    assert "progress bar" in log.read_text() and "progress bar" not in out.getvalue()


def test_extract_log_watch_counts_checkpoints(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    log.write_text("base: 99 tokens, max |h| 3 (layer 1)\n")  # an earlier run's line
    watch = ExtractLogWatch(log, 3)
    with log.open("a") as fh:
        fh.write("base: 3362 tokens, max |h| 29000 (layer 5)\nA/01-gen")
    assert watch() == ["checkpoint base done (1/3)"]
    with log.open("a") as fh:
        fh.write("eral: complete in the store, skipped\n 40%|###  \r100%|#####\n")
        fh.write("control/01-general: same weight files as A/01-general, its data copied\n")
    assert watch() == [
        "checkpoint A/01-general done (2/3)",
        "checkpoint control/01-general done (3/3)",
    ]
    assert watch() == []


def test_failed_step_raises_with_the_log_tail(tmp_path: Path) -> None:
    cmd = _script(tmp_path, "import sys\nprint('boom: bad input', file=sys.stderr)\nsys.exit(3)\n")
    log = tmp_path / "demo.log"
    with pytest.raises(DemoStepError, match=r"(?s)'data' failed \(exit 3\).*demo\.log.*boom"):
        run_step(Progress(["data"], out=io.StringIO()), "data", cmd, "x", log)


@pytest.fixture
def fast_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """run_demo with every step a trivial process (the failing one named by FAIL_STEP)."""
    monkeypatch.setattr(demo_progress, "POLL_S", 0.02)

    def command(args: list[str]) -> list[str]:
        code = "import sys; print('step output'); sys.exit(2 if 'stats' in sys.argv else 0)"
        return [sys.executable, "-c", code, *args]

    monkeypatch.setattr(demo, "_command", command)
    monkeypatch.setattr(demo, "analysed_layers", lambda store, stride: [0, 3])
    import repcollapse.analyze.report.html as html

    monkeypatch.setattr(html, "stage_table", lambda tables: pd.DataFrame({"Checkpoint": ["base"]}))
    return tmp_path / "out"


def test_demo_console_lines(fast_demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from repcollapse.cli.main import main as cli

    code = cli(["demo", "--out", str(fast_demo)])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    # the log path comes first, before any step runs
    assert (
        lines[0]
        == f"[demo] log: {fast_demo.resolve() / 'demo.log'} (every step's output and progress bars)"
    )
    starts = [x for x in lines if ": step " in x and "/" in x.split(": step ")[1][:6]]
    names = [x.split(":")[0].removeprefix("[demo] ") for x in starts]
    assert names[:7] == [
        "data",
        "base",
        "train A",
        "train control",
        "train A_replay10",
        "extract",
        "validate",
    ]
    assert starts[0].startswith("[demo] data: step 1/11: repcollapse data build --out ")
    done = [x for x in lines if ": done in " in x]
    assert len(done) == 8  # data .. metrics done; stats failed
    assert all(re.search(r" \| demo \d+s \| ETA ~\S+$", x) for x in done)
    # the failing step: one message on stderr with the step's own output, exit code 1
    assert code == 1
    assert captured.err.startswith("repcollapse demo: demo step 'stats' failed (exit 2)")
    assert "step output" in captured.err and "Traceback" not in captured.err
    assert "failed" not in captured.out
