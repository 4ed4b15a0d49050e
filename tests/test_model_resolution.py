"""`train base --model ORG/NAME`: a model id found in the local Hugging Face cache, read offline,
and a clear message naming the id and the cache searched when it is not there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_model import make_tiny_model

from repcollapse.store_schema.problems import SchemaError
from repcollapse.train.hf import hf_cache_dir, resolve_model

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cache_with_tiny(hf_home: Path, tiny: Path, repo: str = "local-org/tiny-llama") -> Path:
    """The hub cache layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<sha>}."""
    folder = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snap = folder / "snapshots" / COMMIT
    shutil.copytree(tiny, snap)
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(COMMIT)
    return snap


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "m")


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a network attempt would fail the test
    return home


def test_cache_dir_follows_the_environment(hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hf_cache_dir() == hf_home / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "elsewhere"))
    assert hf_cache_dir() == hf_home / "elsewhere"


def test_model_id_in_the_cache_resolves_to_its_snapshot(hf_home: Path, tiny: Path) -> None:
    snap = _cache_with_tiny(hf_home, tiny)
    assert resolve_model("local-org/tiny-llama") == snap
    assert resolve_model(tiny) == tiny  # a directory is used as it is


def test_missing_model_id_names_the_id_and_the_cache(hf_home: Path) -> None:
    with pytest.raises(SchemaError) as e:
        resolve_model("someone/not-downloaded")
    msg = str(e.value)
    assert "someone/not-downloaded" in msg
    assert str(hf_home / "hub") in msg and "models--someone--not-downloaded: not there" in msg
    assert [p.kind for p in e.value.problems] == ["no_model"]
    with pytest.raises(SchemaError, match="no such path"):
        resolve_model("./not/a/dir/../x y")


def test_train_base_from_the_cache(hf_home: Path, tiny: Path, tmp_path: Path) -> None:
    from repcollapse.store_schema.manifest import read_manifest
    from repcollapse.train.base import materialize_base

    _cache_with_tiny(hf_home, tiny)
    out = materialize_base(tmp_path / "base", "local-org/tiny-llama", device="cpu")
    m = read_manifest(out)
    assert m.base_model == "tiny-llama" and m.model_family == "llama"
    assert m.resolved_config["source"].endswith(COMMIT)
    assert (out / "model.safetensors").is_file()


def test_cli_missing_model_id_is_one_line_on_stderr(hf_home: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "repcollapse.cli.main", "train", "base", "--model",
         "someone/not-downloaded", "--out", str(tmp_path / "b")],
        capture_output=True, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "someone/not-downloaded" in proc.stderr and str(hf_home / "hub") in proc.stderr
    assert not (tmp_path / "b").exists()
