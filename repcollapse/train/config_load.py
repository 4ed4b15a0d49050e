"""Loading a RunConfig from TOML: budgets, defaults and command-line overrides.

A config file names a sequence of stages, the LoRA settings, the mitigations and one or more
budgets (``[budget.demo]``, ``[budget.paper]``); a budget's numbers start from the defaults in
``BUDGET_DEFAULTS``, then the file, then ``--set KEY=VALUE`` overrides.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from repcollapse.train.config import (
    Budget,
    LoraSettings,
    Mitigation,
    RunConfig,
    StageSpec,
)
from repcollapse.train.config_checks import ConfigError, fail
from repcollapse.train.eval_config import EvalSettings

BUDGET_DEFAULTS: dict[str, dict[str, Any]] = {
    # Minutes on a 2-core CPU: ~5 optimizer steps of batch 4 per stage (1,600 tokens), 2 generated
    # and 6 teacher-forced eval records per domain, the future task on 24 items before and after
    # its 4 steps. Measured on SmolLM2 (studies/cpu-small.toml, 2026-12-06): ~55-60 s a trained
    # and evaluated stage; at 3,200 tokens and 6 generated items a stage took ~130 s and the demo
    # 32 minutes. The whole demo budget is in repcollapse/train/config.py (Budget) and
    # eval_config.py (EvalSettings).
    "demo": {},
    # A GPU: a few thousand steps per stage, a larger evaluation. Item counts are sized by the
    # standard error (docs/INTERFACES.md): per-stage changes of 2-4 points need an SE of about
    # 1 point (a difference of two checkpoints at 2 SE); binomial SE at p = 0.5 is 3.5 points at
    # 200 items, 1.6 at 1,000, 1.1 at 2,000. The future task is generated (as many items as
    # `data build --future-eval` writes, up to 2,000); a target domain gives at most its pool
    # (`data build --pool-eval`), and the real sources bound it (HumanEval 164, CHAMP 85 with
    # numeric answers): there the teacher-forced NLL, continuous, is the number that resolves
    # per-stage changes. Each domain's n is in behavior.json.
    "paper": {
        "tokens_per_stage": 4_000_000,
        "max_length": 1024,
        "batch_size": 16,
        "learning_rate": 1e-4,
        "eval": {
            "n_generate": 1000,
            "max_new_tokens": 256,
            "gen_batch_size": 128,
            "n_teacher_forced": 1000,
            "future_steps": 200,
            "future_eval_at": [0, 25, 50, 100, 200],
            "future_batch_size": 16,
            "future_lr": 2e-4,
            "future_n_train": 3200,
            "future_n_eval": 2000,
            "future_rank": 16,
            "future_max_new_tokens": 32,
        },
    },
}


def _tuplify(d: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    out = dict(d)
    for k in keys:
        if k in out and isinstance(out[k], list):
            out[k] = tuple(out[k])
    return out


def _build(cls: type, table: Any, prefix: str, tuple_keys: tuple[str, ...] = ()) -> Any:
    if not isinstance(table, Mapping):
        fail(prefix, table, "a table")
    known = {f.name for f in dataclasses.fields(cls)}
    for k in table:
        if k not in known:
            fail(f"{prefix}.{k}", table[k], f"a known field ({', '.join(sorted(known))})")
    try:
        return cls(**_tuplify(table, tuple_keys))
    except TypeError as e:  # a wrong type the checks did not anticipate
        raise ConfigError(f"config table '{prefix}': {e}") from e


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` (value parsed as TOML, falling back to a bare string)."""
    if "=" not in text:
        raise ConfigError(
            f"override {text!r}: expected KEY=VALUE, e.g. mitigation.replay_fraction=0.1"
        )
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def config_from_dict(
    raw: Mapping[str, Any],
    *,
    budget: str = "demo",
    seed: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> RunConfig:
    """Build a RunConfig from a parsed TOML document; ``overrides`` are ``key=value`` strings."""
    raw = dict(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: '{part}' is not a table")
        node[path[-1]] = value
    known = {"sequence", "seed", "stages", "lora", "mitigation", "budget", "report_to"}
    for k in raw:
        if k not in known:
            fail(k, raw[k], f"a known top-level key ({', '.join(sorted(known))})")
    if budget not in BUDGET_DEFAULTS and budget not in raw.get("budget", {}):
        fail(
            "budget", budget, f"one of {sorted(set(BUDGET_DEFAULTS) | set(raw.get('budget', {})))}"
        )
    btable = _deep_merge(BUDGET_DEFAULTS.get(budget, {}), raw.get("budget", {}).get(budget, {}))
    eval_table = btable.pop("eval", {})
    ev = _build(
        EvalSettings, eval_table, f"budget.{budget}.eval", ("future_tasks", "future_eval_at")
    )
    bud = _build(Budget, {**btable, "name": budget, "eval": ev}, f"budget.{budget}")
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list):
        fail("stages", stages_raw, "a list of {name, kind, domain} tables")
    stages = tuple(_build(StageSpec, s, f"stages[{i}]") for i, s in enumerate(stages_raw))
    lora = _build(LoraSettings, raw.get("lora", {}), "lora", ("target_modules",))
    mit = _build(
        Mitigation, raw.get("mitigation", {}), "mitigation", ("refresh_after", "diversity_layers")
    )
    return RunConfig(
        sequence=raw.get("sequence", ""),
        stages=stages,
        seed=raw.get("seed", 0) if seed is None else seed,
        lora=lora,
        mitigation=mit,
        budget=bud,
        report_to=raw.get("report_to", "none"),
    )


def load_config(
    path: str | Path,
    *,
    budget: str = "demo",
    seed: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> RunConfig:
    """Read a TOML config (a path, or the name of a shipped config such as ``A``)."""
    p = Path(path)
    if not p.is_file():
        shipped = Path(__file__).parent / "configs" / f"{path}.toml"
        if shipped.is_file():
            p = shipped
        else:
            raise ConfigError(f"config file {str(path)!r}: not found (nor a shipped config name)")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p}: invalid TOML ({e})") from e
    return config_from_dict(raw, budget=budget, seed=seed, overrides=overrides)


def load_budget(name: str = "demo") -> Budget:
    """A budget by name from the defaults alone (e.g. evaluation sizes for the base)."""
    stub = {"sequence": "budget", "stages": [{"name": "x", "kind": "sft", "domain": "general"}]}
    return config_from_dict(stub, budget=name).budget
