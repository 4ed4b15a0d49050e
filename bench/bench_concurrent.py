"""Benchmark: several writers filling the reserved slots of one local store at once, against the
same writes done one after another (docs/store.md, "Several writers on an object store").

    python -m bench.bench_concurrent [--size smoke|default] [--writers N] [--workdir DIR]

No model: the store has a model's shape (``default``: SmolLM2-135M's 31 stored layers x 576
features and its 49,152-row unembedding, a 48-example probe of 4,800 tokens; ``smoke``: a few
layers and tokens, to check the benchmark runs) and seeded random contents. Each run does what
``store reserve`` then ``extract --slots-from`` do, through the same store calls:

- the coordinator, alone (under the store lock): create the store, add the unembedding head,
  reserve every checkpoint's slot (``StoreWriter.reserve``);
- the writers, without the lock: per slot ``write_coords``, the LoRA factors, the behaviour,
  ``write_hidden`` and ``write_token_vars`` per token chunk, then extract's own
  ``mark_reserved_complete`` (checksums, ``complete = 1``; no consolidation).

Two stores, side by side in one run: **sequential**, one writer process fills the N slots in
order; **concurrent**, N writer processes, one slot each, started together. Both use the same
worker function in spawned processes, and every process makes its slots' data before a shared
start signal, so the timed window holds the writes alone (opening the store included): the
wall time is the last writer's end minus the start signal. Both stores must then validate
(``validate_store``: no problem, every slot complete) and be equal array for array; either
failing fails the benchmark. The stores are removed afterwards unless ``--keep``.

A timing: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# At the top: a spawned writer imports them when it unpickles its target, before the clock.
from repcollapse.extract.slot import mark_reserved_complete  # noqa: E402
from repcollapse.extract.store_io import TOPK, Geometry, create_or_check  # noqa: E402
from repcollapse.store_schema import open_store  # noqa: E402
from repcollapse.store_schema.testing import (  # noqa: E402
    SyntheticSpec,
    _logit_stats,  # the stored logit statistics' reference implementation
    synthetic_token_coords,
)
from repcollapse.store_schema.validate import validate_store  # noqa: E402
from repcollapse.store_schema.writer import StoreWriter  # noqa: E402

STORE_ID = "bench-concurrent"
START_TIMEOUT_S = 600.0
"""How long the parent waits for the writers to make their data (or to finish writing)."""


@dataclass(frozen=True)
class Size:
    n_layers: int
    n_features: int
    n_tokens: int
    tokens_per_example: int
    vocab_size: int
    token_chunk: int
    lora_rank: int = 8
    n_logits: int = 256
    """Logit columns the synthetic token statistics are computed from (not the vocabulary: the
    statistics' shapes do not depend on it, and 4,800 x 49,152 logits would dwarf the writes)."""


SIZES: dict[str, Size] = {
    "smoke": Size(
        n_layers=3,
        n_features=32,
        n_tokens=400,
        tokens_per_example=20,
        vocab_size=64,
        token_chunk=128,
    ),
    "default": Size(
        n_layers=31,
        n_features=576,
        n_tokens=4800,
        tokens_per_example=100,
        vocab_size=49152,
        token_chunk=4096,
    ),
}


def _names(n: int) -> list[str]:
    return ["base", *(f"A/{c:02d}-stage" for c in range(1, n))]


def _geometry(size: Size) -> Geometry:
    d = size.n_features
    return Geometry(
        n_layers=size.n_layers,
        n_features=d,
        vocab_size=size.vocab_size,
        n_blocks=size.n_layers - 1,
        lora_modules={"q_proj": (d, d), "o_proj": (d, d)},
    )


def _token_coords(size: Size) -> dict[str, np.ndarray]:
    spec = SyntheticSpec(
        n_tokens=size.n_tokens,
        tokens_per_example=size.tokens_per_example,
        vocab_size=size.vocab_size,
    )
    return synthetic_token_coords(spec)


def _checkpoint_coords(names: list[str], c: int, head: int, size: Size) -> dict[str, Any]:
    return {
        "name": names[c],
        "sequence": "" if c == 0 else "A",
        "stage_index": c,
        "stage_kind": "base" if c == 0 else "sft",
        "stage_domain": "" if c == 0 else "math",
        "parent": "" if c == 0 else names[c - 1],
        "seed": 0,
        "tokens_seen": 1000 * c,
        "mitigation": "none",
        "lora_rank": 0 if c == 0 else size.lora_rank,
        "lora_scaling": 0.0 if c == 0 else 2.0,
        "head": head,
        "manifest_json": json.dumps({"name": names[c]}),
        "behavior_json": json.dumps(_behavior(c), sort_keys=True),
    }


def _behavior(c: int) -> dict[str, float]:
    return {"target_score": 0.5 + 0.01 * c, "future_score": 0.7 - 0.01 * c, "val_loss": 2.0}


def reserve(store: Path, size: Size, n: int) -> float:
    """What ``store reserve`` does, without a model: create the store, add the head, reserve
    ``n`` slots; returns its seconds."""
    t0 = time.perf_counter()
    attrs = {
        "probe_hash": "bench-concurrent",
        "model_id": "synthetic",
        "model_family": "synthetic",
        "tokenizer": {"vocab_sha256": "synthetic"},
        "code_version": "bench",
        "extraction_config": {"bench": "concurrent"},
        "store_id": STORE_ID,
    }
    create_or_check(
        store,
        group=None,
        geometry=_geometry(size),
        coords=_token_coords(size),
        attrs=attrs,
        token_chunk=size.token_chunk,
    )
    w = StoreWriter(store)
    rng = np.random.default_rng(7)
    head = w.add_head(rng.normal(size=(size.vocab_size, size.n_features)).astype(np.float32))
    names = _names(n)
    slots = [w.reserve(_checkpoint_coords(names, c, head, size)) for c in range(n)]
    if slots != list(range(n)):
        raise RuntimeError(f"reserve: expected slots 0..{n - 1}, found {slots}")
    return time.perf_counter() - t0


def _slot_data(size: Size, c: int, n: int) -> dict[str, Any]:
    """Everything slot ``c`` writes, from a seed of its own (the same in both runs)."""
    rng = np.random.default_rng([11, c])
    d, blocks, r = size.n_features, size.n_layers - 1, size.lora_rank
    hidden = rng.standard_normal((size.n_layers, size.n_tokens, d), dtype=np.float32)
    logits = rng.normal(size=(size.n_tokens, size.n_logits))
    target = np.roll(np.arange(size.n_tokens) % size.n_logits, -1)
    lora = {}
    if c > 0:
        for m in ("q_proj", "o_proj"):
            a = rng.normal(size=(blocks, r, d)).astype(np.float32)
            b = rng.normal(size=(blocks, d, r)).astype(np.float32)
            lora[m] = (a, b)
    return {
        "hidden": hidden.astype(np.float16),
        "token_vars": _logit_stats(logits, target, TOPK),
        "lora": lora,
        "coords": _checkpoint_coords(_names(n), c, 0, size),
        "behavior": _behavior(c),
    }


def _write_slot(w: Any, index: int, data: dict[str, Any], chunk: int) -> None:
    """The writes of ``extract --slots-from`` for one reserved slot, in its order."""
    w.write_coords(index, data["coords"])
    for module, (a, b) in data["lora"].items():
        w.write_lora(index, module, a, b)
    w.write_behavior(index, data["behavior"])
    hidden, tv = data["hidden"], data["token_vars"]
    for t0 in range(0, hidden.shape[1], chunk):
        w.write_hidden(index, t0, hidden[:, t0 : t0 + chunk])
        w.write_token_vars(index, t0, {k: v[t0 : t0 + chunk] for k, v in tv.items()})
    mark_reserved_complete(w, index)


def _writer(
    store: str, slots: list[int], size: Size, n: int, ready: Any, start: Any, done: Any
) -> None:
    """One writer process: make its slots' data, say so, wait for the start, write them."""
    try:
        data = [_slot_data(size, c, n) for c in slots]
        ready.put(("ready", os.getpid()))
        start.wait()
        t0 = time.time()
        w = StoreWriter(store)
        chunk = int(w.attrs["token_chunk"])
        per_slot = []
        for c, d in zip(slots, data, strict=True):
            t = time.time()
            _write_slot(w, c, d, chunk)
            per_slot.append(time.time() - t)
        done.put(("done", slots, t0, time.time(), per_slot))
    except BaseException as e:  # the parent reports it (a child's traceback is lost otherwise)
        ready.put(("error", f"{type(e).__name__}: {e}"))
        done.put(("error", f"{type(e).__name__}: {e}"))
        raise


def fill(
    store: Path, size: Size, assignment: list[list[int]], n: int, slot_s: dict[int, float]
) -> float:
    """Fill the reserved slots with one spawned process per entry of ``assignment`` (its
    slots, in order), all started together; returns the wall seconds from the start signal to
    the last writer's end, and puts each slot's own seconds in ``slot_s``."""
    ctx = multiprocessing.get_context("spawn")
    ready, done, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=_writer, args=(str(store), slots, size, n, ready, start, done))
        for slots in assignment
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            msg = ready.get(timeout=START_TIMEOUT_S)
            if msg[0] == "error":
                raise RuntimeError(f"a writer failed before the start: {msg[1]}")
        t_start = time.time()
        start.set()
        ends = []
        for _ in procs:
            msg = done.get(timeout=START_TIMEOUT_S)
            if msg[0] == "error":
                raise RuntimeError(f"a writer failed: {msg[1]}")
            ends.append(msg[3])
            slot_s.update(zip(msg[1], msg[4], strict=True))
    except queue.Empty as e:
        raise RuntimeError(f"writers silent for {START_TIMEOUT_S:.0f} s") from e
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"writer processes exited {bad}")
    return max(ends) - t_start


def check(store: Path, n: int) -> None:
    """The store validates (no problem) and lists every checkpoint complete."""
    problems, summary = validate_store(store)
    if problems:
        raise RuntimeError(f"{store}: {len(problems)} problem(s): {[str(p) for p in problems[:5]]}")
    listed = [str(x) for x in open_store(store)["checkpoint"].values]
    if listed != _names(n):
        raise RuntimeError(f"{store}: expected complete checkpoints {_names(n)}, found {listed}")


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def same_stores(one: Path, two: Path) -> list[str]:
    """Names of the arrays that differ between two stores (``hidden`` compared slot by slot)."""
    import zarr

    g1 = zarr.open_group(str(one), mode="r", use_consolidated=False)
    g2 = zarr.open_group(str(two), mode="r", use_consolidated=False)
    names1, names2 = sorted(k for k, _ in g1.arrays()), sorted(k for k, _ in g2.arrays())
    if names1 != names2:
        return sorted(set(names1) ^ set(names2))
    differ = []
    for name in names1:
        a1, a2 = g1[name], g2[name]
        if a1.shape != a2.shape:
            differ.append(name)
        elif name == "hidden":
            if any(not _equal(a1[i], a2[i]) for i in range(a1.shape[0])):
                differ.append(name)
        elif not _equal(a1[...], a2[...]):
            differ.append(name)
    return differ


def run(
    workdir: str | Path, size: str = "default", writers: int = 4, keep: bool = False
) -> dict[str, Any]:
    """``size``: a key of ``SIZES``; ``writers``: N, the checkpoints (one slot each) and the
    concurrent writer processes."""
    if size not in SIZES:
        raise ValueError(f"bench_concurrent size: expected one of {sorted(SIZES)}, found {size!r}")
    if writers < 2:
        raise ValueError(f"bench_concurrent writers: expected at least 2, found {writers}")
    sz, n = SIZES[size], writers
    workdir = Path(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    stores = {"sequential": workdir / "sequential.zarr", "concurrent": workdir / "concurrent.zarr"}
    reserve_s, fill_s, slot_s = {}, {}, {}
    for mode, store in stores.items():
        reserve_s[mode] = reserve(store, sz, n)
        assignment = [list(range(n))] if mode == "sequential" else [[c] for c in range(n)]
        slot_s[mode] = {}
        fill_s[mode] = fill(store, sz, assignment, n, slot_s[mode])
        check(store, n)
    differ = same_stores(stores["sequential"], stores["concurrent"])
    if differ:
        raise RuntimeError(f"the concurrent store differs from the sequential one in {differ}")
    hidden_mb = n * sz.n_layers * sz.n_tokens * sz.n_features * 2 / 1e6
    seq, conc = fill_s["sequential"], fill_s["concurrent"]
    if not keep:
        for store in stores.values():
            shutil.rmtree(store, ignore_errors=True)
            store.with_name(store.name + ".lock").unlink(missing_ok=True)
    shape = f"{sz.n_layers} layers x {sz.n_tokens} tokens x {sz.n_features}"
    return {
        "size": size,
        "shape": asdict(sz),
        "writers": n,
        "cpus": os.cpu_count(),
        "reserve_s": reserve_s,
        "fill_s": fill_s,
        "slot_s": slot_s,
        "hidden_mb": hidden_mb,
        "validated": True,
        "equal": True,
        "lines": [
            (
                f"reserve {n} slots (create, head, slots; {size})",
                reserve_s["concurrent"],
                "s",
                None,
                None,
            ),
            (f"fill {n} slots of {shape}, 1 process", seq, "s", None, None),
            (f"fill the same {n} slots, {n} processes at once", conc, "s", seq / conc, None),
            (f"hidden written, {n} processes at once", hidden_mb / conc, "MB/s", None, None),
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--workdir", default="bench/work/concurrent")
    parser.add_argument("--keep", action="store_true", help="keep the two stores")
    parser.add_argument("--out", default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    out = run(args.workdir, args.size, args.writers, args.keep)
    for label, value, unit, ratio, _ in out["lines"]:
        print(f"{label:<60} {value:>10.4g} {unit}" + (f"  ratio {ratio:.2f}x" if ratio else ""))
    print(f"both stores validate and are equal array for array ({out['writers']} slots)")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
