"""A --scheduler that cannot be used fails at once: one line on stderr naming what was expected
(threads, sync, local or a reachable dask.distributed address like tcp://host:8786) and what
was found, exit 2, in seconds. Before, an unreachable address waited dask's 30 s connect
timeout after opening the store and ended with exit 1 (measured: 31 s), a port that accepts
connections and never answers hung the run (still waiting after 90 s: distributed's connect
has no timeout on its handshake), and a malformed address was refused after the store was
opened with the parser's words alone ('missing port number in address ...')."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_analyze_support import store_with

from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.analyze.engine.scheduler import SchedulerUnavailable
from repcollapse.cli.main import main
from repcollapse.store_schema.testing import SyntheticSpec

SPEC = SyntheticSpec(n_checkpoints=2, n_layers=2, n_tokens=120, n_features=8, token_chunk=64)
EXPECTED = "expected 'threads', 'sync', 'local' or the address of a reachable dask.distributed"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return store_with(tmp_path_factory.mktemp("sched") / "s.zarr", SPEC)


def _closed_port() -> int:
    """A port nothing listens on (bound, then released): connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never answers dask's handshake."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def _run_cli(store: Path, out: Path, address: str, capsys: pytest.CaptureFixture[str]):
    t0 = time.monotonic()
    rc = main(["analyze", "metrics", str(store), "--out", str(out), "--scheduler", address])
    seconds = time.monotonic() - t0
    out_text, err = capsys.readouterr()
    return rc, seconds, out_text, err


@pytest.mark.timeout(60)  # the silent port hung the old code (over 90 s, no end seen)
@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("nonsense", "missing port number"),
        ("tcp://host", "missing port number"),
        ("foo://host:8786", "unknown protocol 'foo'"),
        ("tcp://127.0.0.1:{closed}", "no scheduler answered within 5 s"),
        ("tcp://127.0.0.1:{silent}", "no scheduler answered within 5 s"),
    ],
)
def test_bad_scheduler_is_one_line_exit_2_in_seconds(
    store: Path,
    tmp_path: Path,
    silent_port: int,
    capsys: pytest.CaptureFixture[str],
    address: str,
    why: str,
) -> None:
    address = address.format(closed=_closed_port(), silent=silent_port)
    rc, seconds, out, err = _run_cli(store, tmp_path / "t", address, capsys)
    assert rc == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # refused before the store is opened: not even the plan line
    assert lines[0].startswith("repcollapse analyze metrics: scheduler: " + EXPECTED), err
    assert "like tcp://host:8786" in err and f"found {address!r}" in err and why in err, err
    assert "Traceback" not in err
    assert seconds < 15, f"took {seconds:.1f} s"  # the 5 s connect timeout, not dask's 30 s
    assert not (tmp_path / "t").exists()  # nothing written


def test_library_raises_a_value_error_before_opening_the_store(tmp_path: Path) -> None:
    with pytest.raises(SchedulerUnavailable, match=r"found 'nonsense'") as info:
        run_metrics(tmp_path / "no-store.zarr", tmp_path / "t", scheduler_address="nonsense")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("address", ["threads", "sync"])
def test_local_schedulers_still_run(store: Path, tmp_path: Path, address: str) -> None:
    summary = run_metrics(
        store, tmp_path / "t", scheduler_address=address, metrics=["erank"], log=lambda m: None
    )
    assert summary.passes == SPEC.n_layers
