"""End to end on the tiny model: every stage kind and mitigation, manifests, behaviour,
token budgets, determinism, resumption and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from tiny_model import make_tiny_model, write_tiny_data

from repcollapse.store_schema.manifest import read_manifest
from repcollapse.train.base import materialize_base
from repcollapse.train.config_load import config_from_dict
from repcollapse.train.runner import run_sequence

EVAL = {
    "n_generate": 2,
    "max_new_tokens": 6,
    "gen_batch_size": 4,
    "n_teacher_forced": 3,
    "future_steps": 2,
    "future_eval_at": [0, 1, 2],
    "future_batch_size": 2,
    "future_n_train": 8,
    "future_n_eval": 2,
    "future_rank": 2,
}
BUDGET = {
    "demo": {
        "tokens_per_stage": 600,
        "max_length": 64,
        "learning_rate": 5e-3,
        "full_learning_rate": 1e-3,
        "dpo_learning_rate": 1e-3,
        "eval": EVAL,
    }
}
BEHAVIOR_KEYS = {
    "target_score",
    "retention",
    "ece",
    "val_loss",
    "future_score",
    "future_auc",
    "scores",
    "val_loss_per_domain",
    "future",
}


def _cfg(stages: list[dict[str, str]], mitigation: dict[str, Any] | None = None, **kw: Any):  # noqa: ANN202
    raw = {
        "sequence": "T",
        "stages": stages,
        "lora": {"rank": 4, "alpha": 8},
        "mitigation": mitigation or {},
        "budget": BUDGET,
    }
    return config_from_dict(raw, **kw)


FULL_STAGES = [
    {"name": "general", "kind": "sft", "domain": "general"},
    {"name": "pref", "kind": "dpo", "domain": "preference"},
    {"name": "math", "kind": "full", "domain": "math"},
    {"name": "code", "kind": "sft", "domain": "code"},
]
ALL_MITIGATIONS = {
    "replay_fraction": 0.1,
    "refresh_after": ["general"],
    "diversity_weight": 0.1,
    "diversity_layers": [1, -1],
    "diversity_variance_floor": 0.05,
    "decorrelate_weight": 0.1,
    "decorrelate_k": 2,
    "rank": 8,
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("world")
    tiny = make_tiny_model(root / "tiny")
    data = write_tiny_data(root / "data", n_train=40, n_eval=4)
    base = materialize_base(root / "base", tiny)
    return {"root": root, "tiny": tiny, "data": data, "base": base}


@pytest.fixture(scope="module")
def full_run(world: dict[str, Path]) -> tuple[Any, list[Path], list[str]]:
    cfg = _cfg(FULL_STAGES, ALL_MITIGATIONS)
    logs: list[str] = []
    dirs = run_sequence(
        cfg, world["root"] / "run", world["base"], world["data"], progress=False, log=logs.append
    )
    return cfg, dirs, logs


def _weights(d: Path) -> dict[str, torch.Tensor]:
    return load_file(str(d / "model.safetensors"))


def test_base_checkpoint(world: dict[str, Path]) -> None:
    m = read_manifest(world["base"])
    assert (m.stage_kind, m.stage_index, m.sequence, m.parent, m.tokens_seen) == (
        "base",
        0,
        "",
        "",
        0,
    )
    assert (world["base"] / "model.safetensors").is_file() and (
        world["base"] / "tokenizer.json"
    ).is_file()
    before = (world["base"] / "manifest.json").stat().st_mtime_ns
    materialize_base(world["base"], world["tiny"])  # cached: untouched
    assert (world["base"] / "manifest.json").stat().st_mtime_ns == before


def test_every_kind_and_mitigation_end_to_end(world: dict[str, Path], full_run) -> None:  # noqa: ANN001
    cfg, dirs, logs = full_run
    assert [d.name for d in dirs] == [
        "01-general",
        "02-refresh_general",
        "03-pref",
        "04-math",
        "05-code",
    ]
    assert len([line for line in logs if line.startswith("0")]) == 5  # one summary line per stage
    parent, parent_tokens = read_manifest(world["base"]).name, 0
    for d in dirs:
        m = read_manifest(d)
        assert m.mitigation == "replay:general:0.10+refresh+diversity:0.1+decorrelate:0.1+rank:8"
        assert m.parent == parent and m.sequence == "T" and m.seed == 0
        stage = m.resolved_config["stage"]
        assert m.tokens_seen == parent_tokens + stage["tokens"]
        assert stage["tokens"] == (150 if m.stage_kind == "refresh" else 600)  # matched budgets
        if m.stage_kind == "full":
            assert m.adapter_dir == "" and not (d / "adapter").exists() and m.lora_rank == 0
        else:
            acfg = json.loads((d / "adapter" / "adapter_config.json").read_text())
            assert (acfg["r"], m.lora_rank, m.lora_alpha) == (8, 8, 16.0)
            assert (d / "adapter" / "adapter_model.safetensors").is_file()
        behavior = json.loads((d / "behavior.json").read_text())
        assert set(behavior) >= BEHAVIOR_KEYS
        assert behavior["target_domain"] == m.stage_domain
        assert behavior["future"]["cipher"]["curve"][-1][0] == 2
        parent, parent_tokens = m.name, m.tokens_seen
    sources = {
        read_manifest(d).stage_domain: read_manifest(d).resolved_config["stage"]["sources"]
        for d in dirs
    }
    assert sources["code"] == {"code": 540, "general": 60}  # 10% general replay at a fixed total
    assert sources["preference"] == {"preference": 600}
    regs = {d.name: read_manifest(d).resolved_config["stage"]["regularisers"] for d in dirs}
    assert regs["05-code"] == {"decorrelate": 0.1, "diversity": 0.1}
    assert regs["01-general"] == {"diversity": 0.1}  # nothing earlier to decorrelate from
    assert json.loads((world["base"] / "behavior.json").read_text())["target_score"] is None


def test_each_stage_changed_the_weights(world: dict[str, Path], full_run) -> None:  # noqa: ANN001
    _, dirs, _ = full_run
    prev = _weights(world["base"])
    for d in dirs:
        cur = _weights(d)
        changed = [k for k in cur if not torch.equal(cur[k], prev[k])]
        assert changed, f"{d.name} left every weight unchanged"
        if read_manifest(d).stage_kind != "full":
            adapter = load_file(str(d / "adapter" / "adapter_model.safetensors"))
            assert any(float(v.abs().max()) > 0 for k, v in adapter.items() if "lora_B" in k)
            assert all(k.endswith("proj.weight") for k in changed)  # only adapted projections moved
        prev = cur


def test_resumption_skips_complete_and_redoes_half_written(
    world: dict[str, Path], full_run
) -> None:  # noqa: ANN001
    cfg, dirs, _ = full_run
    logs: list[str] = []
    stamps = [(d / "manifest.json").stat().st_mtime_ns for d in dirs]
    run_sequence(
        cfg, world["root"] / "run", world["base"], world["data"], progress=False, log=logs.append
    )
    assert sum("complete, skipped" in line for line in logs) == 5
    assert [(d / "manifest.json").stat().st_mtime_ns for d in dirs] == stamps
    # a half-written last stage: weights there, no manifest -> retrained from scratch
    last = dirs[-1]
    losses = json.loads((last / "train_log.json").read_text())["losses"]
    (last / "manifest.json").unlink()
    (last / "junk.bin").write_bytes(b"partial")
    logs.clear()
    run_sequence(
        cfg, world["root"] / "run", world["base"], world["data"], progress=False, log=logs.append
    )
    assert sum("complete, skipped" in line for line in logs) == 4
    assert (last / "manifest.json").is_file() and not (last / "junk.bin").exists()
    redone = json.loads((last / "train_log.json").read_text())["losses"]
    assert redone == pytest.approx(losses, abs=1e-6)


def test_resume_refuses_a_different_config(world: dict[str, Path], full_run) -> None:  # noqa: ANN001
    other = _cfg(FULL_STAGES, {**ALL_MITIGATIONS, "replay_fraction": 0.2})
    with pytest.raises(RuntimeError, match="different configuration"):
        run_sequence(
            other,
            world["root"] / "run",
            world["base"],
            world["data"],
            progress=False,
            log=lambda s: None,
        )


def test_same_config_and_seed_reproduce(world: dict[str, Path]) -> None:
    stages = [
        {"name": "general", "kind": "sft", "domain": "general"},
        {"name": "pref", "kind": "dpo", "domain": "preference"},
    ]
    cfg = _cfg(stages, {"diversity_weight": 0.1, "diversity_layers": [-1]}, seed=3)
    runs = []
    for name in ("r1", "r2"):
        dirs = run_sequence(
            cfg,
            world["root"] / name,
            world["base"],
            world["data"],
            progress=False,
            log=lambda s: None,
        )
        runs.append(dirs)
    for d1, d2 in zip(*runs, strict=True):
        l1 = json.loads((d1 / "train_log.json").read_text())["losses"]
        l2 = json.loads((d2 / "train_log.json").read_text())["losses"]
        assert len(l1) > 1 and l1 == pytest.approx(l2, abs=1e-6)
        b1, b2 = (json.loads((d / "behavior.json").read_text()) for d in (d1, d2))
        for b in (b1, b2):
            b.pop("eval_wall_time_s"), b.pop("eval_timing_s")
        assert b1 == b2
        assert read_manifest(d1).seed == 3
    # a different seed gives a different run
    dirs3 = run_sequence(
        _cfg(stages, {"diversity_weight": 0.1, "diversity_layers": [-1]}, seed=4),
        world["root"] / "r3",
        world["base"],
        world["data"],
        progress=False,
        log=lambda s: None,
    )
    l3 = json.loads((dirs3[0] / "train_log.json").read_text())["losses"]
    l1 = json.loads((runs[0][0] / "train_log.json").read_text())["losses"]
    assert l3 != pytest.approx(l1, abs=1e-6)


def test_cli_base_and_run(world: dict[str, Path], tmp_path: Path) -> None:
    from repcollapse.cli.main import main

    base = tmp_path / "base"
    assert main(["train", "base", "--model", str(world["tiny"]), "--out", str(base)]) == 0
    assert read_manifest(base).stage_kind == "base"
    toml = tmp_path / "one.toml"
    toml.write_text(
        'sequence = "S"\nstages = [{ name = "safety", kind = "sft", domain = "safety" }]\n'
        "[budget.demo]\ntokens_per_stage = 300\nmax_length = 64\n"
    )
    argv = [
        "train",
        "run",
        str(toml),
        "--out",
        str(tmp_path / "run"),
        "--base",
        str(base),
        "--data",
        str(world["data"]),
        "--no-eval",
        "--quiet",
        "--seed",
        "2",
        "--set",
        "lora.rank=2",
    ]
    assert main(argv) == 0
    m = read_manifest(tmp_path / "run" / "S" / "01-safety")
    assert (m.seed, m.lora_rank, m.stage_domain, m.tokens_seen) == (2, 2, "safety", 300)
    assert not (tmp_path / "run" / "S" / "01-safety" / "behavior.json").exists()
    assert (
        main(["train", "run", str(toml), "--out", str(tmp_path / "run"), "--set", "lora.rnk=2"])
        == 2
    )


def test_bad_diversity_layer_is_reported(world: dict[str, Path], tmp_path: Path) -> None:
    cfg = _cfg(
        [{"name": "general", "kind": "sft", "domain": "general"}],
        {"diversity_weight": 0.1, "diversity_layers": [-8]},
    )
    with pytest.raises(ValueError, match=r"mitigation.diversity_layers.*\[-8\]"):
        run_sequence(
            cfg,
            tmp_path,
            world["base"],
            world["data"],
            evaluate=False,
            progress=False,
            log=lambda s: None,
        )
    shutil.rmtree(tmp_path / "T", ignore_errors=True)


def test_noop_control_leaves_weights_unchanged(world: dict[str, Path]) -> None:
    """The matched no-op control trains its tokens at learning rate 0: weights equal the parent."""
    cfg = _cfg(FULL_STAGES[:1], {"noop": True})
    assert cfg.mitigation.name == "noop"
    (ckpt,) = run_sequence(
        cfg,
        world["root"] / "noop",
        world["base"],
        world["data"],
        progress=False,
        evaluate=False,
        log=lambda _: None,
    )
    m = read_manifest(ckpt)
    assert m.mitigation == "noop" and m.tokens_seen == cfg.budget.tokens_per_stage
    before, after = _weights(world["base"]), _weights(ckpt)
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), name


def test_identical_first_stage_is_reused_not_retrained(world: dict[str, Path]) -> None:
    """A replay chain's and a matched control's first (general) stage equal the plain chain's:
    with --reuse they are linked, recorded as reused, and later stages still train."""
    root = world["root"] / "reuse"
    general = {"name": "general", "kind": "sft", "domain": "general"}
    chain = _cfg([general, {"name": "code", "kind": "sft", "domain": "code"}])
    a = run_sequence(chain, root, world["base"], world["data"], evaluate=False, progress=False)
    control = _cfg(
        [{**general, "name": "general_1"}, {**general, "name": "general_2"}],
        {"replay_fraction": 0.1, "replay_source": "general"},
        overrides=["sequence=C"],
    )
    logs: list[str] = []
    c = run_sequence(
        control,
        root,
        world["base"],
        world["data"],
        evaluate=False,
        progress=False,
        reuse=[root],
        log=logs.append,
    )
    m_a, m_c1, m_c2 = read_manifest(a[0]), read_manifest(c[0]), read_manifest(c[1])
    stage = m_c1.resolved_config["stage"]
    assert stage["reused_from"] == m_a.name and "reused" in logs[0]
    assert stage["stage_key"] == m_a.resolved_config["stage"]["stage_key"]
    assert stage["sources"] == {"general": 600}  # no general "replay" into a general stage
    assert (m_c1.name, m_c1.parent, m_c2.parent) == (
        "C.replay_general_0.10.s0.01-general_1",
        m_a.parent,
        m_c1.name,
    )
    w_a, w_c = _weights(a[0]), _weights(c[0])
    assert w_c.keys() == w_a.keys()
    for name, w in w_a.items():
        assert torch.equal(w, w_c[name]), name
    assert "reused_from" not in m_c2.resolved_config["stage"]
    assert m_c2.resolved_config["stage"]["stage_key"] != m_c1.resolved_config["stage"]["stage_key"]
    assert (c[1] / "train_log.json").is_file()
    # the same first stage trained without --reuse selects the same examples
    fresh = run_sequence(
        control,
        world["root"] / "noreuse",
        world["base"],
        world["data"],
        evaluate=False,
        progress=False,
        log=lambda _: None,
    )
    ids = json.loads((fresh[0] / "train_log.json").read_text())["example_ids"]
    assert ids == json.loads((a[0] / "train_log.json").read_text())["example_ids"]


def test_generation_with_per_prompt_caps_equals_separate_generations(
    world: dict[str, Path],
) -> None:
    """Prompts of several domains share batches: each completion cut at its own cap equals the
    completion generated alone with that cap (greedy)."""
    from repcollapse.train.evaluate import generate
    from repcollapse.train.hf import load_model, load_tokenizer

    tok = load_tokenizer(world["base"])
    model = load_model(world["base"], "cpu", train=False)
    prompts = ["Add 2 and 3.", "Write a haiku about rain.", "Say no.", "Count to five."]
    caps = [3, 9, 1, 6]
    together = generate(model, tok, prompts, max_new_tokens=caps, batch_size=3, device="cpu")
    alone = [
        generate(model, tok, [p], max_new_tokens=c, batch_size=1, device="cpu")[0]
        for p, c in zip(prompts, caps, strict=True)
    ]
    assert together == alone and all(together), together
    # the cap counts generated token ids (re-encoding the decoded text is no measure of it: a
    # byte-level BPE re-splits text, and special tokens are dropped by the decode)
    from repcollapse.train.greedy import greedy_batch
    from repcollapse.train.pools import prompt_ids

    for p, cap, text in zip(prompts, caps, together, strict=True):
        (ids,), _ = greedy_batch(
            model,
            [prompt_ids(tok, p)],
            [cap],
            pad_id=tok.pad_token_id,
            eos_id=tok.eos_token_id,
            device="cpu",
        )
        assert len(ids) <= cap and tok.decode(ids, skip_special_tokens=True) == text
    with pytest.raises(ValueError, match="3 caps for 4 prompts"):
        generate(model, tok, prompts, max_new_tokens=caps[:3], batch_size=2, device="cpu")
