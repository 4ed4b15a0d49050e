"""Run configs: shipped files parse, overrides apply, and errors name the field and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from repcollapse.train.config import LoraSettings, Mitigation, RunConfig, StageSpec
from repcollapse.train.config_checks import ConfigError
from repcollapse.train.config_load import config_from_dict, load_config

CONFIGS = sorted(
    (Path(__file__).parent.parent / "repcollapse" / "train" / "configs").glob("*.toml")
)
assert CONFIGS, "no shipped configs found: the parametrised tests below would pass vacuously"
STAGES = [
    {"name": "general", "kind": "sft", "domain": "general"},
    {"name": "math", "kind": "sft", "domain": "math"},
]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("budget", ["demo", "paper"])
def test_shipped_configs_parse(path: Path, budget: str) -> None:
    cfg = load_config(path, budget=budget)
    assert cfg.budget.name == budget
    assert cfg.stages


def test_shipped_sequences_and_mitigation_names() -> None:
    names = {p.stem: load_config(p) for p in CONFIGS}
    assert [s.domain for s in names["A"].stages] == ["general", "math", "code", "safety"]
    assert [s.kind for s in names["B"].stages] == ["sft", "sft", "dpo"]
    assert [s.domain for s in names["C"].stages] == ["safety", "general", "math"]
    assert [s.domain for s in names["D"].stages] == ["general", "code", "math"]
    control = names["control"]
    assert len(control.stages) == len(names["A"].stages)
    assert {s.domain for s in control.stages} == {"general"}
    assert control.budget.tokens_per_stage == names["A"].budget.tokens_per_stage
    assert names["A_replay10"].mitigation.name == "replay:general:0.10"
    assert names["A_diversity"].mitigation.name == "diversity:0.1"
    assert names["A_decorrelate"].mitigation.name == "decorrelate:0.1"
    assert names["A_refresh"].mitigation.name == "refresh"
    assert names["A_rank32"].mitigation.name == "rank:32"
    assert names["A"].mitigation.name == "none"
    assert {s.kind for s in names["A_full"].stages} == {"full"}


def test_rank_control_keeps_alpha_over_rank() -> None:
    cfg = config_from_dict({"sequence": "A", "stages": STAGES, "mitigation": {"rank": 32}})
    assert (cfg.effective_lora.rank, cfg.effective_lora.alpha) == (32, 64.0)


def test_refresh_inserted_after_chosen_stage() -> None:
    cfg = config_from_dict(
        {"sequence": "A", "stages": STAGES, "mitigation": {"refresh_after": ["general"]}}
    )
    assert [(s.name, s.kind) for s in cfg.expanded_stages()] == [
        ("general", "sft"),
        ("refresh_general", "refresh"),
        ("math", "sft"),
    ]


def test_cli_style_overrides_and_seed() -> None:
    cfg = config_from_dict(
        {"sequence": "A", "stages": STAGES},
        budget="paper",
        seed=7,
        overrides=[
            "mitigation.replay_fraction=0.2",
            "budget.paper.eval.n_generate=3",
            "lora.rank=4",
        ],
    )
    assert cfg.seed == 7
    assert cfg.mitigation.replay_fraction == 0.2
    assert cfg.budget.eval.n_generate == 3
    assert cfg.budget.tokens_per_stage == 4_000_000  # paper default kept
    assert cfg.lora.rank == 4


@pytest.mark.parametrize(
    ("build", "field", "value"),
    [
        (lambda: LoraSettings(rank=0), "lora.rank", "0"),
        (lambda: LoraSettings(dropout=1.5), "lora.dropout", "1.5"),
        (lambda: StageSpec("x", "rlhf", "general"), "kind", "'rlhf'"),
        (lambda: StageSpec("x", "sft", "cooking"), "domain", "'cooking'"),
        (lambda: StageSpec("x", "dpo", "math"), "domain", "'math'"),
        (lambda: Mitigation(replay_fraction=1.5), "mitigation.replay_fraction", "1.5"),
        (lambda: Mitigation(replay_source="elsewhere"), "mitigation.replay_source", "'elsewhere'"),
        (lambda: Mitigation(diversity_weight=-1.0), "mitigation.diversity_weight", "-1.0"),
        (lambda: RunConfig("A", (StageSpec("a", "sft", "math"),), seed=-3), "seed", "-3"),
        (
            lambda: config_from_dict(
                {"sequence": "A", "stages": STAGES, "mitigation": {"refresh_after": ["x"]}}
            ),
            "mitigation.refresh_after",
            "'x'",
        ),
        (
            lambda: config_from_dict({"sequence": "A", "stages": STAGES, "lora": {"rnk": 8}}),
            "lora.rnk",
            "8",
        ),
        (
            lambda: config_from_dict({"sequence": "A", "stages": STAGES}, budget="huge"),
            "budget",
            "'huge'",
        ),
        (
            lambda: config_from_dict(
                {"sequence": "A", "stages": STAGES, "budget": {"demo": {"batch_size": 0}}}
            ),
            "budget.batch_size",
            "0",
        ),
        (
            lambda: config_from_dict(
                {
                    "sequence": "A",
                    "stages": STAGES,
                    "budget": {"demo": {"eval": {"future_eval_at": [1, 6]}}},
                }
            ),
            "eval.future_eval_at",
            "(1, 6)",
        ),
        (
            lambda: config_from_dict({"sequence": "A", "stages": STAGES * 2}),
            "stages[].name",
            "'general'",
        ),
    ],
)
def test_validation_errors_name_field_and_value(build, field: str, value: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError) as err:
        build()
    msg = str(err.value)
    assert field in msg and value in msg, msg


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("sequence = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
