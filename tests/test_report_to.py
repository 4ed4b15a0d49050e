"""Training-loss logging: ``report_to`` in the run config (none by default; tensorboard offline
when installed; wandb only when installed, else a clear error), the per-stage TensorBoard event
files kept beside the checkpoints, and ``train_log.json`` written either way."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from repcollapse.train import config as config_mod
from repcollapse.train.config_checks import ConfigError
from repcollapse.train.config_load import config_from_dict

STAGES = [{"name": "general", "kind": "sft", "domain": "general"}]
BUDGET = {"demo": {"tokens_per_stage": 300, "max_length": 64, "learning_rate": 5e-3}}


def _raw(**kw: Any) -> dict[str, Any]:
    return {
        "sequence": "T",
        "stages": STAGES,
        "lora": {"rank": 2, "alpha": 4},
        "budget": BUDGET,
        **kw,
    }


def _pretend_installed(monkeypatch: pytest.MonkeyPatch, present: set[str]) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        config_mod.importlib.util,
        "find_spec",
        lambda name, *a: (
            (real("json") if name in present else None)
            if name in ("tensorboard", "tensorboardX", "wandb")
            else real(name, *a)
        ),
    )


def test_default_is_none_and_bad_values_name_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_from_dict(_raw()).report_to == "none"
    with pytest.raises(ConfigError, match=r"config field 'report_to': expected one of \['none'"):
        config_from_dict(_raw(report_to="mlflow"))
    _pretend_installed(monkeypatch, set())
    with pytest.raises(ConfigError, match=r"'wandb' is not installed \(pip install wandb\)"):
        config_from_dict(_raw(report_to="wandb"))
    with pytest.raises(ConfigError, match=r"'tensorboard' or 'tensorboardX' is not installed"):
        config_from_dict(_raw(), overrides=["report_to=tensorboard"])


def test_installed_loggers_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    _pretend_installed(monkeypatch, {"wandb", "tensorboardX"})
    assert config_from_dict(_raw(report_to="wandb")).report_to == "wandb"
    assert config_from_dict(_raw(report_to="tensorboard")).report_to == "tensorboard"


def test_report_to_does_not_change_the_run_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the loss is also logged changes no weight: a run resumed with another report_to
    reuses its complete stages."""
    from repcollapse.train.stage_plan import run_identity as _run_identity

    _pretend_installed(monkeypatch, {"tensorboardX"})
    a = config_from_dict(_raw())
    b = config_from_dict(_raw(report_to="tensorboard"))
    assert _run_identity(a) == _run_identity(b)
    assert b.to_dict()["report_to"] == "tensorboard"  # the manifest still records it


def _has_tensorboard() -> bool:
    return any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX"))


@pytest.mark.skipif(not _has_tensorboard(), reason="needs tensorboard or tensorboardX installed")
def test_tensorboard_event_files_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tiny_model import make_tiny_model, write_tiny_data

    from repcollapse.train.base import materialize_base
    from repcollapse.train.runner import run_sequence
    from repcollapse.train.stages import tensorboard_dir

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = materialize_base(tmp_path / "base", make_tiny_model(tmp_path / "tiny"))
    data = write_tiny_data(tmp_path / "data", n_train=20, n_eval=2)
    cfg = config_from_dict(_raw(report_to="tensorboard"))
    (ckpt,) = run_sequence(cfg, tmp_path / "run", base, data, evaluate=False, progress=False,
                           log=lambda _m: None)  # fmt: skip
    events = sorted(tensorboard_dir(ckpt).rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    assert not (ckpt / ".trainer").exists()
    log = json.loads((ckpt / "train_log.json").read_text())
    assert log["losses"] and len(log["losses"]) == sum("loss" in h for h in log["log_history"])
