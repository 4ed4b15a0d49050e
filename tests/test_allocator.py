"""engine.allocator: the glibc malloc settings of `analyze metrics` are accepted, applied around
the run and leave the numbers alone."""

from __future__ import annotations

import ctypes.util
import platform
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_analyze_support import store_with

from repcollapse.analyze.engine import allocator
from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.cli.main import main
from repcollapse.store_schema.testing import SyntheticSpec

SPEC = SyntheticSpec(n_checkpoints=2, n_layers=2, n_tokens=240, n_features=8, token_chunk=96)
WIDE = SyntheticSpec(n_checkpoints=2, n_layers=2, n_tokens=1200, n_features=64, token_chunk=512)
REPO = Path(__file__).resolve().parents[1]
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
def test_glibc_accepts_every_setting() -> None:
    # mallopt refuses an unknown parameter number or a value out of range by returning 0
    # without a word: every setting must be taken, or the measured gain is not there
    assert allocator.tune() == [name for name, _, _ in allocator.SETTINGS]


def test_without_glibc_nothing_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert allocator.tune() == []
    assert allocator.trim() is False
    with allocator.tuned() as applied:
        assert applied == []


def test_analyze_metrics_runs_tuned_and_trims_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_run = run_metrics

    def spy_run(*args: object, **kwargs: object) -> object:
        calls.append("run")
        return real_run(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(allocator, "tune", lambda: calls.append("tune") or [])
    monkeypatch.setattr(allocator, "trim", lambda: calls.append("trim") or True)
    monkeypatch.setattr("repcollapse.analyze.engine.runner.run_metrics", spy_run)
    store = store_with(tmp_path / "s.zarr", SPEC)
    args = ["analyze", "metrics", str(store), "--out", str(tmp_path / "t"), "--metrics", "erank"]
    assert main(args) == 0
    assert calls == ["tune", "run", "trim"]


def test_the_settings_leave_the_tables_bitwise_alone(tmp_path: Path) -> None:
    # the plain run in a process of its own: the settings hold for the whole process once set
    # (tune() above, or any `analyze metrics` earlier in this pytest process), so a plain run
    # here would be a tuned one. Chunks of 512 x 64 float64 (256 KiB) pass glibc's default
    # mmap threshold (128 KiB), so the two runs take their blocks from different places.
    store = store_with(tmp_path / "s.zarr", WIDE)
    code = (
        "import sys\n"
        "from repcollapse.analyze.engine.runner import run_metrics\n"
        "run_metrics(sys.argv[1], sys.argv[2], log=lambda _: None)\n"
    )
    plain = tmp_path / "plain"
    subprocess.run([sys.executable, "-c", code, str(store), str(plain)], check=True, cwd=REPO)
    with allocator.tuned():
        run_metrics(store, tmp_path / "tuned", log=lambda _: None)
    for name in ("metrics.parquet", "checkpoints.parquet"):
        a = pd.read_parquet(plain / name)
        b = pd.read_parquet(tmp_path / "tuned" / name)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
