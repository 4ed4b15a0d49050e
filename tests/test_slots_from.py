"""Several writers without a lock (docs/store.md, "Several writers on an object store"): one
``store reserve``, then workers that each fill only their reserved slot (``extract --slots-from``).

- threads on an fsspec ``memory://`` store (an in-process filesystem: processes cannot share
  it, so the workers are threads of one process, started together);
- processes on a local directory, which --slots-from writes without its lock file (the lock file
  is removed after the reservation and must not come back), one of them SIGKILLed mid-slot;
- every refusal: a checkpoint outside the slots file, a slots file of another store, weights
  other than the reserved ones (complete slot or not), --generate, a store never reserved.

Every store must equal, array by array (bitwise) and head by head, a sequential ``extract`` of
the same checkpoints: the coordinator reserves slots and heads in the sequential order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import zarr
from test_extract_fixtures import (
    make_full_stage,
    make_lora_stage,
    make_tiny_checkpoint,
    write_probe,
)
from test_extract_resume import assert_same_store

from repcollapse.cli.main import main
from repcollapse.extract.reserve import reserve_slots
from repcollapse.extract.reserved_slots import read_slots_file, write_slots_file
from repcollapse.extract.run import KILL_ENV, ExtractConfig, extract
from repcollapse.store_schema import open_store
from repcollapse.store_schema.problems import SchemaError, UsageError
from repcollapse.store_schema.protocol import observe_steps
from repcollapse.store_schema.validate import validate_store

REPO = Path(__file__).resolve().parents[1]
CHUNK = 128
BATCH = 4


def _config(**kw: object) -> ExtractConfig:
    return ExtractConfig(batch_size=BATCH, token_chunk=CHUNK, progress=False, **kw)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """base -> LoRA stage -> full stage, and their sequential extraction (the reference)."""
    root = tmp_path_factory.mktemp("slots")
    base = make_tiny_checkpoint(root / "base")
    sft, _ = make_lora_stage(base, root / "sft")
    full = make_full_stage(sft, root / "full")
    probe = write_probe(root / "probe.jsonl")
    reference = root / "reference.zarr"
    labels: list[str] = []
    with observe_steps(labels.append):
        extract(reference, probe, [base, sft, full], _config())
    return {
        "root": root,
        "ckpts": [base, sft, full],
        "names": ["base", "A/01-math", "A/02-full"],
        "probe": probe,
        "reference": reference,
        "labels": labels,
    }


def _reserve(store: str | Path, chain: dict, out: Path, ckpts: list[Path] | None = None) -> Path:
    slots = reserve_slots(store, chain["probe"], ckpts or chain["ckpts"], _config())
    write_slots_file(slots, out)
    return out


def _complete(store: str | Path) -> dict[str, bool]:
    g = zarr.open_group(str(store), mode="r", use_consolidated=False)
    return {str(n): bool(c) for n, c in zip(g["name"][:], g["complete"][:], strict=True)}


def test_threads_on_a_memory_store_equal_a_sequential_run(chain: dict, tmp_path: Path) -> None:
    url = f"memory://slots-{uuid.uuid4().hex}"
    slots = _reserve(url, chain, tmp_path / "slots.json")
    assert [s.slot for s in read_slots_file(slots).slots] == [0, 1, 2]
    assert _complete(url) == dict.fromkeys(chain["names"], False)  # reserved, none complete
    assert len(open_store(url)["checkpoint"]) == 0  # readers see no reserved-only slot
    start, errors, results = threading.Event(), [], {}

    def worker(ckpt: Path) -> None:
        start.wait()
        try:
            results[ckpt.name] = extract(url, chain["probe"], [ckpt], _config(), slots_from=slots)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(c,)) for c in chain["ckpts"]]
    for t in threads:
        t.start()
    start.set()
    for t in threads:
        t.join(600)
    assert errors == []
    assert sorted(r[0].status for r in results.values()) == ["extracted"] * 3
    assert validate_store(url)[0] == []
    assert_same_store(url, chain["reference"])  # every array, slot for slot, and every head
    # A worker run again finds its slot complete and skips it, writing nothing.
    again = extract(url, chain["probe"], [chain["ckpts"][1]], _config(), slots_from=slots)
    assert [r.status for r in again] == ["skipped"]


def _worker(store: Path, chain: dict, ckpt: Path, slots: Path, kill_at: int | None):
    env = {**os.environ, KILL_ENV: str(kill_at or "")}
    code = "import sys; from repcollapse.cli.main import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "extract", "--store", str(store), "--probe"]
    argv += [str(chain["probe"]), "--batch-size", str(BATCH), "--token-chunk", str(CHUNK)]
    argv += ["--no-progress", "--slots-from", str(slots), str(ckpt)]
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _mid_slot_step(labels: list[str]) -> int:
    """A protocol step half-way through the LoRA stage's slot, counted as a worker counts: from
    its first write (a worker creates, repairs and reserves nothing)."""
    committed = [i for i, label in enumerate(labels) if label == "reserve: name (slot committed)"]
    done = [i for i, label in enumerate(labels) if label == "complete"]
    steps = done[1] - committed[1]
    assert steps >= 10
    return steps // 2


def test_processes_without_the_lock_and_a_killed_worker(chain: dict, tmp_path: Path) -> None:
    store, out = tmp_path / "s.zarr", tmp_path / "slots.json"
    code = main(
        ["store", "reserve", "--store", str(store), "--probe", str(chain["probe"])]
        + ["--batch-size", str(BATCH), "--token-chunk", str(CHUNK), "--no-progress"]
        + ["--out", str(out), *map(str, chain["ckpts"])]
    )
    assert code == 0
    lock = store.with_name(store.name + ".lock")
    lock.unlink()  # the reservation took it; no worker may take it again
    kill_at = _mid_slot_step(chain["labels"])
    procs = [
        _worker(store, chain, c, out, kill_at if i == 1 else None)
        for i, c in enumerate(chain["ckpts"])
    ]
    for proc in procs:
        proc.wait(600)
    errs = [p.stderr.read().decode()[-2000:] for p in procs]
    assert [p.returncode for p in procs] == [0, -signal.SIGKILL, 0], errs
    assert not lock.exists()
    assert _complete(store) == {"base": True, "A/01-math": False, "A/02-full": True}
    kinds = {p.kind for p in validate_store(store)[0]}
    assert kinds <= {"incomplete_checkpoint"}, kinds
    assert sorted(open_store(store)["checkpoint"].values) == ["A/02-full", "base"]
    # The killed worker again, same command: it rewrites its slot and completes it.
    results = extract(store, chain["probe"], [chain["ckpts"][1]], _config(), slots_from=out)
    assert [r.status for r in results] == ["extracted"]
    assert not lock.exists()
    assert validate_store(store)[0] == []
    assert_same_store(store, chain["reference"])


@pytest.fixture(scope="module")
def reserved(chain: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A local store with base and the LoRA stage reserved (not the full stage)."""
    root = tmp_path_factory.mktemp("reserved")
    store = root / "r.zarr"
    slots = _reserve(store, chain, root / "slots.json", chain["ckpts"][:2])
    return {"store": store, "slots": slots}


def _untouched(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in store.rglob("*") if p.is_file()}


def test_a_checkpoint_outside_the_slots_file_is_refused(
    chain: dict, reserved: dict, capsys: pytest.CaptureFixture
) -> None:
    store, slots, full = reserved["store"], reserved["slots"], chain["ckpts"][2]
    before = _untouched(store)
    with pytest.raises(UsageError, match=r"'A/02-full' has no reserved slot .*slots\.json"):
        extract(store, chain["probe"], [chain["ckpts"][0], full], _config(), slots_from=slots)
    code = main(
        ["extract", "--store", str(store), "--probe", str(chain["probe"])]
        + ["--slots-from", str(slots), str(full)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "A/02-full" in err and str(slots) in err
    assert _untouched(store) == before


def test_other_weights_under_a_reserved_name_are_refused(
    chain: dict, reserved: dict, tmp_path: Path
) -> None:
    """A retrained stage under the reserved name: refused before the slot is written, and again
    once the reserved one is complete (a complete slot is never overwritten or skipped over)."""
    store, slots = reserved["store"], reserved["slots"]
    other, _ = make_lora_stage(chain["ckpts"][0], tmp_path / "other", seed=9)  # "A/01-math"
    before = _untouched(store)
    with pytest.raises(SchemaError, match=r"A/01-math.*expected the weights reserved") as e:
        extract(store, chain["probe"], [other], _config(), slots_from=slots)
    assert str(slots) in str(e.value)
    assert _untouched(store) == before
    extract(store, chain["probe"], [chain["ckpts"][1]], _config(), slots_from=slots)
    assert _complete(store)["A/01-math"]
    before = _untouched(store)
    with pytest.raises(SchemaError, match=r"A/01-math.*expected the weights reserved"):
        extract(store, chain["probe"], [other], _config(), slots_from=slots)
    assert _untouched(store) == before


def test_a_slots_file_of_another_store_or_no_store_is_refused(
    chain: dict, reserved: dict, tmp_path: Path
) -> None:
    store, slots, base = reserved["store"], reserved["slots"], chain["ckpts"][0]
    other = tmp_path / "other.zarr"
    extract(other, chain["probe"], [chain["ckpts"][1]], _config())  # a store_id of its own
    before, theirs = _untouched(store), _untouched(other)
    with pytest.raises(SchemaError, match=r"store_id.*reserve again in this store"):
        extract(other, chain["probe"], [base], _config(), slots_from=slots)
    with pytest.raises(SchemaError, match=r"token_count_mismatch|token"):  # another tokenization
        extract(store, chain["probe"], [base], _config(max_length=16), slots_from=slots)
    missing = tmp_path / "missing.zarr"
    with pytest.raises(SchemaError, match=r"found no store: run `repcollapse store reserve`"):
        extract(missing, chain["probe"], [base], _config(), slots_from=slots)
    assert not missing.exists()
    with pytest.raises(UsageError, match=r"--generate: expected 0"):
        extract(store, chain["probe"], [base], _config(generate=1), slots_from=slots)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "repcollapse.slots", "version": 1}))
    with pytest.raises(UsageError, match=r"bad\.json: store: expected a string"):
        extract(store, chain["probe"], [base], _config(), slots_from=bad)
    edited = json.loads(slots.read_text())
    edited["slots"][0]["head_sha256"] = "0" * 64
    bad.write_text(json.dumps(edited))
    with pytest.raises(SchemaError, match=r"expected the head reserved for 'base'"):
        extract(store, chain["probe"], [base], _config(), slots_from=bad)
    assert _untouched(store) == before and _untouched(other) == theirs


def test_a_slot_taken_by_another_checkpoint_is_refused(chain: dict, tmp_path: Path) -> None:
    """A slots file whose slot no longer holds its checkpoint (the store was rebuilt and
    reserved in another order under the same id cannot happen; an edited file can)."""
    store, slots = tmp_path / "t.zarr", tmp_path / "slots.json"
    _reserve(store, chain, slots, chain["ckpts"][:2])
    body = json.loads(slots.read_text())
    body["slots"][0]["slot"], body["slots"][1]["slot"] = 1, 0
    slots.write_text(json.dumps(body))
    with pytest.raises(SchemaError, match=r"slot 1.*expected checkpoint 'base'.*found 'A/01-math'"):
        extract(store, chain["probe"], [chain["ckpts"][0]], _config(), slots_from=slots)


def test_sequential_workers_with_a_quantising_codec(
    chain: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """int8-token stores a per-slot ``hidden_scale`` beside ``hidden``: it too is the worker's
    own chunks. The slots file comes from standard output (``store reserve`` without --out)."""
    reference = tmp_path / "ref.zarr"
    extract(reference, chain["probe"], chain["ckpts"], _config(codec="int8-token"))
    url = f"memory://slots-codec-{uuid.uuid4().hex}"
    capsys.readouterr()
    flags = ["--probe", str(chain["probe"]), "--token-chunk", str(CHUNK), "--no-progress"]
    code = main(
        ["store", "reserve", "--store", url, *flags, "--codec", "int8-token"]
        + [str(c) for c in chain["ckpts"]]
    )
    assert code == 0
    slots = tmp_path / "slots.json"
    slots.write_text(capsys.readouterr().out)
    assert [s.checkpoint for s in read_slots_file(slots).slots] == chain["names"]
    for ckpt in reversed(chain["ckpts"]):  # any order: each writes its own slot
        extract(url, chain["probe"], [ckpt], _config(codec="int8-token"), slots_from=slots)
    assert validate_store(url)[0] == []
    assert "hidden_scale" in zarr.open_group(url, mode="r")
    assert_same_store(url, reference)
