"""Several writers in one store at once (docs/store.md, "Write protocol"): N = 3 processes, each
writing its own checkpoint through the real protocol (tests/store_fault_writer.py, extract's
calls without a model), started together. Every checkpoint must come out equal to the same
checkpoint written by one sequential process, and a writer SIGKILLed mid-write must leave the
others' checkpoints complete and its own repairable by a re-run."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import store_fault_writer as W

from repcollapse.store_schema import open_store
from repcollapse.store_schema.protocol import observe_steps, protocol_step
from repcollapse.store_schema.validate import validate_store
from repcollapse.store_schema.writer import StoreWriter

N = len(W.NAMES)


def write_one(store: str, c: int, start: str | None = None, kill: bool = False) -> None:
    """Write checkpoint ``c`` (never a twin) after ``start`` exists: a barrier, so the N writers
    really overlap; ``kill``: SIGKILL this process right after its second hidden chunk, in the
    middle of its checkpoint (its slot reserved and named, not complete)."""
    while start is not None and not os.path.exists(start):
        pass
    if not kill:
        _write(store, c)
        return
    seen = []

    def observe(label: str) -> None:
        seen.append(label)
        if seen.count("write: hidden chunk") == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    with observe_steps(observe):
        _write(store, c)


def _write(store: str, c: int) -> None:
    W.create_or_check(
        store,
        group=None,
        geometry=W.GEOMETRY,
        coords=W.token_coords(),
        attrs=W.ATTRS,
        token_chunk=W.CHUNK,
    )
    w = StoreWriter(store)
    if w.status(W.NAMES[c]) == "complete":
        return
    rng = np.random.default_rng(1000 + c)
    head = w.add_head(np.random.default_rng(7).normal(size=(W.VOCAB, W.N_FEATURES)))
    index = w.reserve(W.checkpoint_coords(c, head))
    a = rng.normal(size=(1, 2, W.N_FEATURES)).astype(np.float32)
    b = rng.normal(size=(1, W.N_FEATURES, 2)).astype(np.float32)
    w.write_lora(index, "q_proj", a, b)
    w.write_behavior(index, W.behavior(c))
    hidden = rng.normal(size=(W.N_LAYERS, W.N_TOKENS, W.N_FEATURES)).astype(np.float16)
    logits = rng.normal(size=(W.N_TOKENS, W.VOCAB))
    for t0 in range(0, W.N_TOKENS, W.CHUNK):
        w.write_hidden(index, t0, hidden[:, t0 : t0 + W.CHUNK])
        protocol_step("write: hidden chunk")
        w.write_token_vars(index, t0, W.token_vars(logits[t0 : t0 + W.CHUNK]))
        protocol_step("write: token vars chunk")
    w.mark_complete(index)


def _by_name(path: Path) -> dict[str, dict[str, np.ndarray]]:
    ds = open_store(path).load()
    return {
        str(n): {
            v: ds[v].sel(checkpoint=n).values for v in ds.data_vars if "checkpoint" in ds[v].dims
        }
        for n in ds["checkpoint"].values
    }


def _assert_equal(got: dict, want: dict, names: list[str]) -> None:
    assert sorted(got) == sorted(names)
    for name in names:
        for var, value in want[name].items():
            if var == "head":  # which head slot a writer got depends on who came first
                continue
            np.testing.assert_array_equal(got[name][var], value, err_msg=f"{name}: {var}")


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("seq") / "s.zarr"
    for c in range(N):
        write_one(str(path), c)
    return _by_name(path)


def _ctx() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["store_fault_writer"])
    return ctx


@pytest.mark.parametrize("repeat", range(3))
def test_three_concurrent_writers_equal_a_sequential_run(
    sequential: dict, tmp_path: Path, repeat: int
) -> None:
    store, start = tmp_path / "c.zarr", tmp_path / "go"
    ctx = _ctx()
    procs = [ctx.Process(target=write_one, args=(str(store), c, str(start))) for c in range(N)]
    for p in procs:
        p.start()
    start.touch()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * N
    assert validate_store(store)[0] == []
    _assert_equal(_by_name(store), sequential, list(W.NAMES))


def test_a_killed_writer_leaves_the_others_complete(sequential: dict, tmp_path: Path) -> None:
    store, start = tmp_path / "k.zarr", tmp_path / "go"
    ctx = _ctx()
    procs = [
        ctx.Process(target=write_one, args=(str(store), c, str(start), c == 1)) for c in range(N)
    ]
    for p in procs:
        p.start()
    start.touch()
    for p in procs:
        p.join(120)
    assert procs[1].exitcode == -9 and procs[0].exitcode == procs[2].exitcode == 0
    others = [W.NAMES[0], W.NAMES[2]]
    slots = open_store(store, include_incomplete=True)
    assert sorted(map(str, slots["name"].values)) == sorted(W.NAMES)  # killed mid-checkpoint
    _assert_equal(_by_name(store), sequential, others)  # the killed one is not listed
    write_one(str(store), 1)  # the next run repairs it
    assert validate_store(store)[0] == []
    _assert_equal(_by_name(store), sequential, list(W.NAMES))
