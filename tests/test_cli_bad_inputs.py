"""Bad input to `repcollapse extract` / `repcollapse train`: one clear line, no traceback, no writes.

Each case builds its inputs in its own directory, runs the real CLI in a subprocess as a user
would, and checks the exit code (2: a bad flag value, 1: bad data or an unusable path), that
stderr is exactly one line naming the offending path or field, that no line of it is a Python
traceback, and that every file under the case directory is byte-identical afterwards (so no
store, no lock file, nothing inside a non-Zarr directory was written).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_extract_fixtures import make_tiny_checkpoint, probe_records, write_manifest, write_probe

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "repcollapse.cli.main"]


@dataclass
class Inputs:
    ckpt: Path
    probe: Path


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    root = tmp_path_factory.mktemp("good")
    return Inputs(make_tiny_checkpoint(root / "base"), write_probe(root / "probe.jsonl"))


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def run_cli(args: list[str], cwd: Path, *, user: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    hf_home = Path(tempfile.gettempdir()) / "repcollapse-test-hf-home"
    hf_home.mkdir(exist_ok=True)
    hf_home.chmod(0o1777)  # shared with the unprivileged user of the read-only case
    env["HF_HOME"] = str(hf_home)
    prefix = [] if user is None else ["setpriv", f"--reuid={user}", f"--regid={user}"]
    prefix += ["--clear-groups"] if user is not None else []
    return subprocess.run(
        [*prefix, *CLI, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def extract_args(store: Path, probe: Path, *ckpts: Path, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        "extract",
        "--store",
        str(store),
        "--probe",
        str(probe),
        "--no-progress",
        *extra,
        *map(str, ckpts),
    ]


def copy_ckpt(good: Inputs, case: Path, name: str = "ckpt") -> Path:
    return Path(shutil.copytree(good.ckpt, case / name))


# Each case: (inputs in `case`) -> (argv, expected exit code, substrings stderr must contain)
Case = Callable[[Inputs, Path], tuple[list[str], int, list[str]]]


def non_utf8_probe(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    probe = case / "probe.jsonl"
    first = json.dumps(probe_records()[0]).encode()
    probe.write_bytes(first + b"\n" + b'{"id": "caf\xe9"}\n')
    return extract_args(case / "s.zarr", probe, good.ckpt), 1, [f"{probe}:2", "UTF-8"]


def probe_is_directory(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    probe = case / "probe_dir"
    probe.mkdir()
    return extract_args(case / "s.zarr", probe, good.ckpt), 1, [str(probe), "directory"]


def span_offsets_bool(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    rec = probe_records()[0]
    rec["spans"] = [{"name": "early_response", "start": False, "end": True}]
    probe = write_probe(case / "probe.jsonl", [rec])
    return extract_args(case / "s.zarr", probe, good.ckpt), 1, [f"{probe}:1", "spans[0]", "bool"]


def checkpoint_missing(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    ckpt = case / "no_such_ckpt"
    return extract_args(case / "s.zarr", good.probe, ckpt), 1, [str(ckpt), "does not exist"]


def checkpoint_without_weights(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    ckpt = copy_ckpt(good, case)
    (ckpt / "model.safetensors").unlink()
    return extract_args(case / "s.zarr", good.probe, ckpt), 1, [str(ckpt), "model.safetensors"]


def pickle_only_checkpoint(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    import torch
    from safetensors.torch import load_file

    ckpt = copy_ckpt(good, case)
    torch.save(load_file(ckpt / "model.safetensors"), ckpt / "pytorch_model.bin")
    (ckpt / "model.safetensors").unlink()
    return extract_args(case / "s.zarr", good.probe, ckpt), 1, ["pytorch_model.bin", "pickle"]


def truncated_safetensors(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    ckpt = copy_ckpt(good, case)
    weights = ckpt / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return extract_args(case / "s.zarr", good.probe, ckpt), 1, [str(weights), "truncated"]


def remote_code_config(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    ckpt = copy_ckpt(good, case)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model_type"] = "tiny_custom"
    cfg["auto_map"] = {
        "AutoConfig": "configuration_custom.CustomConfig",
        "AutoModelForCausalLM": "modeling_custom.CustomModel",
    }
    (ckpt / "config.json").write_text(json.dumps(cfg))
    # Would leave a file behind if transformers ever imported it (the snapshot would differ).
    marker = case / "custom_code_ran"
    (ckpt / "configuration_custom.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PretrainedConfig\n"
        "class CustomConfig(PretrainedConfig):\n    model_type = 'tiny_custom'\n"
    )
    return extract_args(case / "s.zarr", good.probe, ckpt), 1, [str(ckpt), "auto_map"]


def device_cuda_without_gpu(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    args = extract_args(case / "s.zarr", good.probe, good.ckpt, extra=("--device", "cuda"))
    return args, 2, ["--device", "cuda"]


def store_is_file(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    store = case / "s.zarr"
    store.write_text("not a store\n")
    return extract_args(store, good.probe, good.ckpt), 1, [str(store), "file"]


def store_is_foreign_directory(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    store = case / "results"
    store.mkdir()
    (store / "notes.txt").write_text("my notes\n")
    (store / "sub").mkdir()
    (store / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return extract_args(store, good.probe, good.ckpt), 1, [str(store), "not a Zarr store"]


def store_is_foreign_zarr(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    import numpy as np
    import zarr

    store = case / "other.zarr"
    g = zarr.open_group(str(store), mode="w", zarr_format=3)
    g.attrs["tool"] = "someone else's"
    g.create_array("x", data=np.arange(4))
    return extract_args(store, good.probe, good.ckpt), 1, [str(store), "store_kind"]


def zero_flag(flag: str, field: str) -> Case:
    def case_fn(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
        args = extract_args(case / "s.zarr", good.probe, good.ckpt, extra=(flag, "0"))
        return args, 2, [flag, field, "found 0"]

    return case_fn


def empty_checkpoint_name(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    ckpt = copy_ckpt(good, case)
    write_manifest(ckpt, name="")
    return extract_args(case / "s.zarr", good.probe, ckpt), 1, [str(ckpt), "'name'"]


def reused_name_other_weights(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    from repcollapse.extract.run import ExtractConfig, extract

    store = case / "s.zarr"
    extract(store, good.probe, [good.ckpt], ExtractConfig(progress=False))
    other = make_tiny_checkpoint(case / "retrained", seed=7)  # same name "base", other weights
    return extract_args(store, good.probe, other), 1, [str(other), "'base'", "sha256"]


def train_base_out_is_file(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    out = case / "out"
    out.write_text("keep me\n")
    return ["train", "base", "--model", str(good.ckpt), "--out", str(out)], 1, [str(out), "file"]


def train_run_out_is_file(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    out = case / "out"
    out.write_text("keep me\n")
    return ["train", "run", "A", "--out", str(out), "--no-eval"], 1, [str(out), "file"]


def train_base_pickle_only_model(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    import torch
    from safetensors.torch import load_file

    model = copy_ckpt(good, case, "model")
    torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    args = ["train", "base", "--model", str(model), "--out", str(case / "out")]
    return args, 1, ["pytorch_model.bin", "pickle"]


def probe_missing(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    probe = case / "no_probe.jsonl"
    return extract_args(case / "s.zarr", probe, good.ckpt), 1, [str(probe), "does not exist"]


def checkpoint_is_file(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    ckpt = case / "ckpt.txt"
    ckpt.write_text("not a checkpoint\n")
    return extract_args(case / "s.zarr", good.probe, ckpt), 1, [str(ckpt), "found a file"]


def missing_shard(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
    ckpt = copy_ckpt(good, case)
    (ckpt / "model.safetensors").rename(ckpt / "model-00001-of-00002.safetensors")
    weight_map = {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}
    weight_map["lm_head.weight"] = "model-00002-of-00002.safetensors"
    index = {"metadata": {}, "weight_map": weight_map}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    shard = ckpt / "model-00002-of-00002.safetensors"
    return extract_args(case / "s.zarr", good.probe, ckpt), 1, [str(shard), "found none"]


def train_device_cuda(command: str) -> Case:
    def case_fn(good: Inputs, case: Path) -> tuple[list[str], int, list[str]]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
        out = case / "out"
        args = ["train", command, *(["A", "--no-eval"] if command == "run" else [])]
        args += ["--out", str(out), "--device", "cuda"]
        args += ["--model", str(good.ckpt)] if command == "base" else []
        return args, 2, ["--device cuda", "CUDA"]

    return case_fn


CASES: dict[str, Case] = {
    "non_utf8_probe": non_utf8_probe,
    "probe_is_directory": probe_is_directory,
    "span_offsets_bool": span_offsets_bool,
    "checkpoint_missing": checkpoint_missing,
    "checkpoint_without_weights": checkpoint_without_weights,
    "pickle_only_checkpoint": pickle_only_checkpoint,
    "truncated_safetensors": truncated_safetensors,
    "remote_code_config": remote_code_config,
    "device_cuda_without_gpu": device_cuda_without_gpu,
    "store_is_file": store_is_file,
    "store_is_foreign_directory": store_is_foreign_directory,
    "store_is_foreign_zarr": store_is_foreign_zarr,
    "batch_size_0": zero_flag("--batch-size", "batch_size"),
    "token_chunk_0": zero_flag("--token-chunk", "token_chunk"),
    "max_length_0": zero_flag("--max-length", "max_length"),
    "token_cap_per_span_0": zero_flag("--token-cap-per-span", "token_cap_per_span"),
    "probe_missing": probe_missing,
    "checkpoint_is_file": checkpoint_is_file,
    "missing_shard": missing_shard,
    "train_base_device_cuda": train_device_cuda("base"),
    "train_run_device_cuda": train_device_cuda("run"),
    "empty_checkpoint_name": empty_checkpoint_name,
    "reused_name_other_weights": reused_name_other_weights,
    "train_base_out_is_file": train_base_out_is_file,
    "train_run_out_is_file": train_run_out_is_file,
    "train_base_pickle_only_model": train_base_pickle_only_model,
}


def assert_one_clear_line(
    result: subprocess.CompletedProcess, code: int, needles: list[str]
) -> None:
    report = f"rc={result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == code, report
    assert "Traceback" not in result.stderr + result.stdout, report
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, report
    for needle in needles:
        assert needle in lines[0], f"{needle!r} missing\n{report}"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line_and_writes_nothing(
    name: str, good: Inputs, tmp_path: Path
) -> None:
    case = tmp_path / "case"
    case.mkdir()
    args, code, needles = CASES[name](good, case)
    before = snapshot(case)
    result = run_cli(args, tmp_path)
    assert_one_clear_line(result, code, needles)
    assert snapshot(case) == before


@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv to drop root")
@pytest.mark.parametrize("existing", [False, True], ids=["new_store", "existing_store"])
def test_read_only_store_directory(existing: bool, good: Inputs) -> None:
    """Run as an unprivileged user (root ignores permissions) against a directory it may read
    but not write: a new store beside which the lock file cannot go, or an existing store."""
    from repcollapse.extract.run import ExtractConfig, extract

    user = 65534 if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="repcollapse-ro-"))
    try:
        shutil.copytree(good.ckpt, root / "ckpt")
        shutil.copy(good.probe, root / "probe.jsonl")
        store = root / "s.zarr"
        if existing:
            extract(store, root / "probe.jsonl", [root / "ckpt"], ExtractConfig(progress=False))
            write_manifest(root / "ckpt", name="second")
        for p in [root, *root.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        if user is None:  # not root: take write permission away instead
            for p in [root, *root.rglob("*")]:
                if p.is_dir():
                    p.chmod(0o555)
        before = snapshot(root)
        result = run_cli(extract_args(store, root / "probe.jsonl", root / "ckpt"), REPO, user=user)
        expect = str(store) if existing else str(root)
        assert_one_clear_line(result, 1, [expect, "not writable"])
        assert snapshot(root) == before
    finally:
        for p in [root, *root.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(root)


def test_traceback_env_shows_where_a_one_line_error_came_from(tmp_path: Path) -> None:
    import subprocess
    import sys

    missing = str(tmp_path / "nope.zarr")
    argv = [sys.executable, "-m", "repcollapse.cli.main", "store", "describe", missing]
    plain = subprocess.run(argv, capture_output=True, text=True)
    assert plain.returncode != 0 and "Traceback" not in plain.stderr
    env = {**__import__("os").environ, "REPCOLLAPSE_TRACEBACK": "1"}
    loud = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert loud.returncode != 0 and "Traceback" in loud.stderr
