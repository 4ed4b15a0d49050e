"""Hard-linked twins (train run --reuse): a copy of the stored data, equal to an extraction."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import zarr
from test_extract_fixtures import make_lora_stage, make_tiny_checkpoint, write_probe
from test_extract_resume import BATCH, CHUNK, _cli, assert_same_store

from repcollapse.extract.run import ExtractConfig, extract
from repcollapse.store_schema import open_store
from repcollapse.store_schema.protocol import observe_steps
from repcollapse.store_schema.validate import validate_store

N_LORA_ARRAYS = 14  # 7 modules x (A, B)


def twin_of(stage: Path, out: Path, *, link: bool) -> Path:
    """``stage`` under another name: every file hard-linked (or copied), its own manifest."""
    for f in stage.rglob("*"):
        if f.is_file() and f.name != "manifest.json":
            dest = out / f.relative_to(stage)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(f, dest) if link else shutil.copy(f, dest)
    manifest = json.loads((stage / "manifest.json").read_text())
    manifest.update(name="control/01-math", sequence="control")
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _config() -> ExtractConfig:
    return ExtractConfig(batch_size=BATCH, token_chunk=CHUNK, progress=False)


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("twins")
    base = make_tiny_checkpoint(root / "base")
    sft, _ = make_lora_stage(base, root / "sft")
    linked = twin_of(sft, root / "linked", link=True)
    copied = twin_of(sft, root / "copied", link=False)
    probe = write_probe(root / "probe.jsonl")
    runs = {}
    for name, twin in (("linked", linked), ("copied", copied)):
        runs[name] = extract(root / f"{name}.zarr", probe, [base, sft, twin], _config())
    return {"root": root, "base": base, "sft": sft, "linked": linked, "probe": probe, "runs": runs}


def test_linked_twin_is_copied_and_equals_an_extraction(twins: dict) -> None:
    root = twins["root"]
    assert [r.status for r in twins["runs"]["linked"]] == ["extracted", "extracted", "copied"]
    assert [r.status for r in twins["runs"]["copied"]] == ["extracted"] * 3
    assert validate_store(root / "linked.zarr")[0] == []
    # every array (hidden, statistics, top-k, LoRA factors, coords) as a real extraction
    assert_same_store(root / "linked.zarr", root / "copied.zarr")
    ds = open_store(root / "linked.zarr")
    assert list(ds["sequence"].values) == ["", "A", "control"]
    log = zarr.open_group(str(root / "linked.zarr"), mode="r").attrs["extraction_log"]
    assert log[-1]["copied_from"] == "A/01-math"


def test_killed_copy_resumes_to_the_same_store(twins: dict, tmp_path: Path) -> None:
    ckpts = [twins["base"], twins["sft"], twins["linked"]]
    labels: list[str] = []  # the protocol steps of the same extraction, by label
    with observe_steps(labels.append):
        extract(tmp_path / "labels.zarr", twins["probe"], ckpts, _config())
    committed = [i for i, x in enumerate(labels) if x == "reserve: name (slot committed)"]
    writes = [i for i, x in enumerate(labels) if x == "extract: write"]
    copy_writes = [i for i in writes if i > committed[2]]
    assert len(copy_writes) > N_LORA_ARRAYS  # LoRA arrays, behaviour, hidden and token chunks
    # kill 3 writes into the copy (among the LoRA arrays), and after its last chunk write
    for step in (copy_writes[2], copy_writes[-2]):
        kill_at = step + 1  # KILL_ENV is 1-based: after the step of index ``step``
        store = tmp_path / f"s{kill_at}.zarr"
        proc = _cli(store, {"probe": twins["probe"]}, ckpts, kill_at)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
        assert [p.kind for p in validate_store(store)[0]] == ["incomplete_checkpoint"]
        results = extract(store, twins["probe"], ckpts, _config())
        assert [r.status for r in results] == ["skipped", "skipped", "copied"]
        assert_same_store(store, twins["root"] / "linked.zarr")
