"""Kill-and-resume (SIGKILL at protocol steps, then re-run) and concurrent writers on one store.

REPCOLLAPSE_EXTRACT_KILL_AT counts the steps of the store's write protocol
(repcollapse.store_schema.protocol): inside create, add_head and reserve (each resize), then extract's
writes (LoRA modules, behaviour, (hidden, token vars) per chunk) and the completion marks. The
reference run records every step's label, and the kill points are chosen by label.
tests/test_store_faults.py kills at every step of the same protocol without a model.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from test_extract_fixtures import make_lora_stage, make_tiny_checkpoint, write_probe

from repcollapse.extract.run import KILL_ENV, ExtractConfig, extract
from repcollapse.store_schema import open_store, store_exists
from repcollapse.store_schema.protocol import observe_steps
from repcollapse.store_schema.validate import validate_store

REPO = Path(__file__).resolve().parents[1]
CHUNK = 128
BATCH = 4


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("resume")
    base = make_tiny_checkpoint(root / "base")
    sft, _ = make_lora_stage(base, root / "sft")
    probe = write_probe(root / "probe.jsonl")
    reference = root / "reference.zarr"
    labels: list[str] = []
    with observe_steps(labels.append):
        extract(reference, probe, [base, sft], _config())
    g = zarr.open_group(str(reference), mode="r")
    n_chunks = math.ceil(g["hidden"].shape[2] / g.attrs["token_chunk"])
    assert n_chunks >= 4
    return {
        "root": root,
        "base": base,
        "sft": sft,
        "probe": probe,
        "reference": reference,
        "n_chunks": n_chunks,
        "labels": labels,
    }


def _config() -> ExtractConfig:
    return ExtractConfig(batch_size=BATCH, token_chunk=CHUNK, progress=False)


def _cli(store: Path, chain: dict, ckpts: list[Path], kill_at: int | None) -> subprocess.Popen:
    env = {**os.environ, KILL_ENV: str(kill_at or "")}
    code = "import sys; from repcollapse.cli.main import main; sys.exit(main(sys.argv[1:]))"
    argv = [
        sys.executable,
        "-c",
        code,
        "extract",
        "--store",
        str(store),
        "--probe",
        str(chain["probe"]),
        "--batch-size",
        str(BATCH),
        "--token-chunk",
        str(CHUNK),
        "--no-progress",
        *map(str, ckpts),
    ]
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def assert_same_store(a: Path, b: Path) -> None:
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    names = sorted(k for k, _ in ga.arrays())
    assert names == sorted(k for k, _ in gb.arrays())
    for name in names:
        np.testing.assert_array_equal(ga[name][...], gb[name][...], err_msg=name)
    assert ga.attrs["head_hashes"] == gb.attrs["head_hashes"]


def _kill_points(labels: list[str]) -> list[tuple[int, int]]:
    """(step to kill at, checkpoints complete after the kill), by protocol-step label."""
    resizes = [i for i, label in enumerate(labels) if label.startswith("reserve: resize ")]
    names = [i for i, label in enumerate(labels) if label == "reserve: resize name"]
    done = [i for i, label in enumerate(labels) if label == "complete"]
    writes = [i for i, label in enumerate(labels) if label == "extract: write"]
    base_writes = [i for i in writes if names[0] < i < done[0]]
    lora_writes = [i for i in writes if names[1] < i < done[1]]
    points = [
        (labels.index("create: arrays"), 0),  # inside create: every array, no attrs
        (resizes[len(resizes) // 4], 0),  # between two resizes of the base's reservation
        (names[0], 0),  # every array resized, the name not yet written
        (base_writes[len(base_writes) // 2], 0),  # in the middle of the hidden chunks
        (base_writes[-2], 0),  # between the last chunk and the completion mark
        (lora_writes[4], 1),  # base complete, LoRA stage halfway through its modules
    ]
    return [(i + 1, complete) for i, complete in points]


@pytest.mark.parametrize("point", range(6))
def test_kill_and_resume_is_identical(chain: dict, tmp_path: Path, point: int) -> None:
    kill_at, n_complete = _kill_points(chain["labels"])[point]
    store = tmp_path / "s.zarr"
    proc = _cli(store, chain, [chain["base"], chain["sft"]], kill_at)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert store_exists(store) == (point > 0)  # a killed creation leaves no store
    if point > 0:
        kinds = {p.kind for p in validate_store(store)[0]}
        assert kinds <= {"incomplete_checkpoint", "orphan_slot", "wrong_length"}, kinds
        assert len(open_store(store)["checkpoint"]) == n_complete  # readers never crash
    results = extract(store, chain["probe"], [chain["base"], chain["sft"]], _config())
    assert [r.status for r in results] == (
        ["skipped", "extracted"] if n_complete else ["extracted", "extracted"]
    )
    assert validate_store(store)[0] == []
    assert_same_store(store, chain["reference"])


def test_concurrent_writers(chain: dict, tmp_path: Path) -> None:
    store = tmp_path / "shared.zarr"
    procs = [_cli(store, chain, [ckpt], None) for ckpt in (chain["base"], chain["sft"])]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
    assert validate_store(store)[0] == []
    ours, ref = open_store(store), open_store(chain["reference"])
    assert sorted(ours["checkpoint"].values) == sorted(ref["checkpoint"].values)
    for name in ref["checkpoint"].values:
        for var in ("hidden", "logit_entropy", "topk_ids", "lora_A__q_proj", "lora_B__down_proj"):
            np.testing.assert_array_equal(
                ours[var].sel(checkpoint=name).values, ref[var].sel(checkpoint=name).values
            )
