"""A sequence of stages from a RunConfig: planning, training, evaluation, manifests, resumption.

Layout: ``RUN_DIR/<sequence>/<NN>-<stage>/`` with NN the stage index (the base is index 0 and
lives in its own directory). A stage directory is complete when it has ``manifest.json`` (written
last, atomically); re-running skips complete stages and retrains an incomplete one from scratch.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repcollapse.store_schema.manifest import CheckpointManifest, read_manifest, write_json_atomic
from repcollapse.train.config import SFT_DOMAINS, RunConfig, StageSpec
from repcollapse.train.hf import hardware, library_versions, load_tokenizer, resolve_device
from repcollapse.train.pools import (
    DataDir,
    Selection,
    pair_cost,
    pair_min_cut,
    sft_loss_tokens,
    take_budget,
    truncate_pair,
)


@dataclass
class StagePlan:
    index: int
    spec: StageSpec
    examples: list[dict[str, list[int]]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    tokens: int = 0
    sources: dict[str, int] = field(default_factory=dict)

    @property
    def dirname(self) -> str:
        return f"{self.index:02d}-{self.spec.name}"


def _select(
    data: DataDir, domain: str, budget: int, seed: int, cursors: dict[str, int]
) -> Selection:
    # One fixed permutation per (seed, domain); the cursor makes later stages continue after the
    # examples earlier stages of this sequence already used.
    rng = random.Random(f"{seed}|{domain}")
    recs = data.records(domain, "train")
    ids = [str(r.get("id", i)) for i, r in enumerate(recs)]
    kw: dict[str, Any] = {}
    if domain == "preference":
        kw = {"cost": pair_cost, "truncate": truncate_pair, "min_cut": pair_min_cut}
    sel = take_budget(
        data.encoded(domain, "train"), ids, budget, rng=rng, start=cursors.get(domain, 0), **kw
    )
    cursors[domain] = cursors.get(domain, 0) + sel.consumed
    return sel


def plan_sequence(cfg: RunConfig, data: DataDir) -> list[StagePlan]:
    """Every stage's exact training set (deterministic in the config and the data)."""
    cursors: dict[str, int] = {}
    plans: list[StagePlan] = []
    earlier: list[str] = []
    mit = cfg.mitigation
    for i, spec in enumerate(cfg.expanded_stages(), start=1):
        plan = StagePlan(index=i, spec=spec)
        total = cfg.budget.tokens_per_stage
        if spec.kind == "refresh":
            total = max(cfg.budget.max_length, round(mit.refresh_fraction * total))
        parts: list[tuple[str, int]] = []
        replay_from: list[str] = []
        if mit.replay_fraction > 0 and spec.kind in ("sft", "full"):
            if mit.replay_source == "general":
                # A general stage replaying general data is just a general stage: its data,
                # and so its weights, equal the unmitigated chain's (train run --reuse shares it).
                replay_from = [] if spec.domain == "general" else ["general"]
            elif mit.replay_source == "random":
                # The falsification control: replay from one other SFT domain drawn at random
                # (seeded by the run seed and the stage index), not from a meaningful source.
                others = [d for d in SFT_DOMAINS if d != spec.domain]
                replay_from = [random.Random(f"{cfg.seed}|replay|{i}").choice(others)]
            else:
                replay_from = [d for d in dict.fromkeys(earlier) if d != spec.domain]
        replay = round(mit.replay_fraction * total) if replay_from else 0
        parts.append((spec.domain, total - replay))
        for j, d in enumerate(replay_from):
            share = replay // len(replay_from) + (1 if j < replay % len(replay_from) else 0)
            if share:
                parts.append((d, share))
        for domain, n in parts:
            sel = _select(data, domain, n, cfg.seed, cursors)
            plan.examples.extend(sel.examples)
            plan.ids.extend(sel.ids)
            plan.tokens += sel.tokens
            plan.sources[domain] = plan.sources.get(domain, 0) + sel.tokens
        if spec.kind in ("sft", "full") and spec.domain not in earlier:
            earlier.append(spec.domain)
        plans.append(plan)
    return plans


def checkpoint_name(cfg: RunConfig, plan: StagePlan) -> str:
    label = cfg.sequence
    if cfg.mitigation.name != "none":
        label += f"[{cfg.mitigation.name}]"
    return f"{label}@s{cfg.seed}/{plan.dirname}"


def _run_identity(cfg: RunConfig) -> dict[str, Any]:
    """What must match for a complete stage directory to be reused on resumption."""
    d = cfg.to_dict()
    d["budget"].pop("eval", None)  # evaluation sizes do not change the weights
    d.pop("report_to", None)  # nor does where the loss is also logged
    return json.loads(json.dumps(d))  # tuples -> lists, as a manifest read back has them


# Mitigation fields that change how a stage trains on its data (replay changes the data itself,
# which the example ids already capture; refresh is a stage of its own).
_TRAINING_MITIGATION = (
    "diversity_weight",
    "diversity_layers",
    "diversity_variance_floor",
    "decorrelate_weight",
    "decorrelate_k",
    "noop",
)


def train_seed(cfg: RunConfig, plan: StagePlan) -> int:
    """Distinct adapter inits per stage, reproducible from the run seed."""
    return cfg.seed * 1000 + plan.index


def stage_key(cfg: RunConfig, plan: StagePlan, parent_key: str, data: Path) -> str:
    """A fingerprint of everything that determines a stage's weights and its evaluation: the
    parent's key (so the whole lineage), kind, domain, the exact training examples, LoRA and
    budget settings, the training-relevant mitigation fields, the train seed, and the evaluation
    settings and data. Two stages with equal keys produce the same checkpoint (up to the
    nondeterminism of the hardware), whatever their sequence or stage name."""
    import hashlib

    mit = cfg.mitigation
    budget = _as_plain(cfg.budget)
    evaluation = budget.pop("eval")
    identity = {
        "parent": parent_key,
        "kind": plan.spec.kind,
        "domain": plan.spec.domain,
        "example_ids": plan.ids,
        "tokens": plan.tokens,
        "lora": _as_plain(cfg.effective_lora),
        "budget": budget,
        "mitigation": {k: getattr(mit, k) for k in _TRAINING_MITIGATION},
        "train_seed": train_seed(cfg, plan),
        "eval": evaluation,
        "seed": cfg.seed,
        "data_dir": str(data.resolve()),
    }
    text = json.dumps(identity, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _base_key(base: Path) -> str:
    return "base:" + str(base.resolve())


def reusable_stages(reuse_dirs: list[Path]) -> dict[str, Path]:
    """stage_key -> a complete stage directory under ``reuse_dirs`` (searched to any depth).
    Read once per run: a run's own stages never match each other (their lineages differ)."""
    found: dict[str, Path] = {}
    for root in reuse_dirs:
        for mpath in sorted(Path(root).rglob("manifest.json")):
            try:
                stage = json.loads(mpath.read_text()).get("resolved_config", {}).get("stage", {})
            except (OSError, json.JSONDecodeError):
                continue
            if "stage_key" in stage:
                found.setdefault(stage["stage_key"], mpath.parent)
    return found


def _copy_stage(src: Path, dst: Path) -> None:
    """Every file of ``src`` but its manifest into ``dst`` (hard links where the filesystem
    allows: checkpoints are read-only once complete)."""
    for f in sorted(src.rglob("*")):
        rel = f.relative_to(src)
        if f.is_dir() or rel == Path("manifest.json"):
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, dst / rel)
        except OSError:
            shutil.copy2(f, dst / rel)


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def _summary(
    plan: StagePlan,
    tokens_seen: int,
    behavior: dict[str, Any] | None,
    base_b: dict[str, Any] | None,
    losses: list[float],
    train_s: float,
    eval_s: float,
) -> str:
    f = _f
    s = plan.spec
    line = f"{plan.dirname}: {s.kind}/{s.domain} tokens={plan.tokens} (cum {tokens_seen})"
    if losses:
        line += f" loss {losses[0]:.3f}->{losses[-1]:.3f}"
    if behavior:
        base_t = (base_b or {}).get("scores", {}).get(s.domain)
        line += (
            f" target={f(behavior.get('target_score'))} (base {f(base_t)})"
            f" retention={f(behavior.get('retention'))} ece={f(behavior.get('ece'))}"
            f" future={f(behavior.get('future_score'))}"
        )
    return line + f" [train {train_s:.0f}s, eval {eval_s:.0f}s]"


def _ensure_base_behavior(
    base: Path,
    data: Path,
    cfg: RunConfig,
    device: str,
    progress: bool,
    scorer: Any,
    pref_scorer: Any,
) -> dict[str, Any]:
    from repcollapse.train.evaluate import _settings_dict, evaluate_checkpoint

    path = base / "behavior.json"
    want = _settings_dict(cfg.budget.eval, cfg.budget.max_length, cfg.seed)
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("eval_settings") == want:
            return old
    b = evaluate_checkpoint(
        base,
        data,
        cfg.budget.eval,
        target_domain=None,
        device=device,
        seed=cfg.seed,
        max_length=cfg.budget.max_length,
        scorer=scorer,
        preference_scorer=pref_scorer,
        progress=progress,
    )
    write_json_atomic(path, b)
    return b


def run_sequence(
    cfg: RunConfig,
    out: str | Path,
    base: str | Path,
    data: str | Path,
    *,
    device: str | None = None,
    evaluate: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
    scorer: Any = None,
    preference_scorer: Any = None,
    reuse: list[Path] | None = None,
) -> list[Path]:
    """Train (or resume) every stage of ``cfg``; returns the stage directories in order.

    ``reuse``: directories of other runs (e.g. the other sequences of one experiment). A stage
    whose ``stage_key`` equals a complete stage found there is not trained again: its files are
    linked and this run's manifest records ``reused_from``. The matched-token control and a
    replay variant share their first stage with the chain they control for this way."""
    from repcollapse.train.evaluate import evaluate_checkpoint
    from repcollapse.train.stages import train_stage

    base, data = Path(base), Path(data)
    base_m = read_manifest(base)
    device = resolve_device(device)
    seq_dir = Path(out) / cfg.sequence
    seq_dir.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(base)
    plans = plan_sequence(cfg, DataDir(data, tok, cfg.budget.max_length))
    base_b = None
    if evaluate:
        base_b = _ensure_base_behavior(base, data, cfg, device, progress, scorer, preference_scorer)
        fmt = {k: base_b.get(k) for k in ("retention", "ece", "val_loss", "future_score")}
        log(f"{cfg.sequence} base: " + " ".join(f"{k}={_f(v)}" for k, v in fmt.items()))
    lora = cfg.effective_lora
    identity = _run_identity(cfg)
    parent_dir, parent_m = base, base_m
    parent_key = _base_key(base)
    reusable = reusable_stages(list(reuse or []))
    paths = {"base_dir": str(base.resolve()), "data_dir": str(data.resolve())}
    prior_adapters: list[Path] = []
    dirs: list[Path] = []
    for plan in plans:
        ckpt = seq_dir / plan.dirname
        dirs.append(ckpt)
        key = stage_key(cfg, plan, parent_key, data)
        parent_key = key
        if (ckpt / "manifest.json").is_file():
            m = read_manifest(ckpt)
            if m.resolved_config.get("run") != identity:
                raise RuntimeError(
                    f"{ckpt} holds a complete checkpoint of a different configuration "
                    f"(mitigation {m.mitigation!r}, seed {m.seed}); use another --out"
                )
            log(f"{plan.dirname}: complete, skipped")
            parent_dir, parent_m = ckpt, m
            if m.adapter_dir:
                prior_adapters.append(ckpt / m.adapter_dir)
            continue
        if ckpt.exists():
            shutil.rmtree(ckpt)  # no manifest: half-written by an interrupted run
        t0 = time.time()
        source = reusable.get(key)
        if source is not None and (not evaluate or (source / "behavior.json").is_file()):
            src_m = read_manifest(source)
            ckpt.mkdir(parents=True)
            _copy_stage(source, ckpt)
            src_stage = src_m.resolved_config.get("stage", {})
            manifest = _manifest(
                cfg,
                plan,
                key,
                parent_m,
                base_m,
                stage={k: v for k, v in src_stage.items() if k not in ("name", "reused_from")},
                paths=paths,
                wall_time_s=time.time() - t0,
                device=device,
                reused_from=src_m.name,
            )
            parent_dir, parent_m = ckpt, _commit(ckpt, manifest, prior_adapters)
            log(f"{plan.dirname}: identical to {src_m.name} ({source}), reused")
            continue
        res = train_stage(
            plan.spec,
            plan.examples,
            parent_dir,
            ckpt,
            budget=cfg.budget,
            lora=lora,
            mitigation=cfg.mitigation,
            seed=train_seed(cfg, plan),
            prior_adapters=list(prior_adapters),
            device=device,
            progress=progress,
            report_to=cfg.report_to,
        )
        train_s = time.time() - t0
        loss_tokens = sum(sft_loss_tokens(e) for e in plan.examples if "labels" in e)
        write_json_atomic(
            ckpt / "train_log.json",
            {
                "losses": res.losses,
                "log_history": res.log_history,
                "example_ids": plan.ids,
            },
        )
        behavior = None
        t1 = time.time()
        if evaluate:
            behavior = evaluate_checkpoint(
                ckpt,
                data,
                cfg.budget.eval,
                target_domain=plan.spec.domain,
                device=device,
                seed=cfg.seed,
                max_length=cfg.budget.max_length,
                scorer=scorer,
                preference_scorer=preference_scorer,
                progress=progress,
            )
            write_json_atomic(ckpt / "behavior.json", behavior)
            if behavior["scorer_errors"]:
                errs = behavior["scorer_errors"]
                log(f"warning: {len(errs)} completions could not be scored (scored 0): {errs[0]}")
        eval_s = time.time() - t1
        manifest = _manifest(
            cfg,
            plan,
            key,
            parent_m,
            base_m,
            stage={
                "loss_tokens": loss_tokens,
                "n_examples": len(plan.examples),
                "sources": plan.sources,
                "steps": res.steps,
                "train_seed": train_seed(cfg, plan),
                "regularisers": res.regularisers,
                "device": device,
                "final_loss": res.losses[-1] if res.losses else None,
                "train_time_s": round(train_s, 3),
                "eval_time_s": round(eval_s, 3),
            },
            paths=paths,
            wall_time_s=time.time() - t0,
            device=device,
        )
        parent_dir, parent_m = ckpt, _commit(ckpt, manifest, prior_adapters)
        log(_summary(plan, manifest.tokens_seen, behavior, base_b, res.losses, train_s, eval_s))
    return dirs


def _commit(
    ckpt: Path, manifest: CheckpointManifest, prior_adapters: list[Path]
) -> CheckpointManifest:
    """Write the manifest (last: the stage is complete) and note its adapter for later stages."""
    write_json_atomic(ckpt / "manifest.json", manifest.to_dict())
    if manifest.adapter_dir:
        prior_adapters.append(ckpt / manifest.adapter_dir)
    return manifest


def _manifest(
    cfg: RunConfig,
    plan: StagePlan,
    key: str,
    parent_m: CheckpointManifest,
    base_m: CheckpointManifest,
    *,
    stage: dict[str, Any],
    paths: dict[str, str],
    wall_time_s: float,
    device: str,
    reused_from: str | None = None,
) -> CheckpointManifest:
    """This run's manifest of one stage (``stage``: what training measured, or the reused
    source's record of it)."""
    lora = cfg.effective_lora
    use_lora = plan.spec.kind != "full"
    record = {
        "name": plan.spec.name,
        "kind": plan.spec.kind,
        "domain": plan.spec.domain,
        "tokens": plan.tokens,
        **stage,
        "stage_key": key,
    }
    if reused_from:
        record["reused_from"] = reused_from
    return CheckpointManifest(
        name=checkpoint_name(cfg, plan),
        sequence=cfg.sequence,
        stage_index=plan.index,
        stage_kind=plan.spec.kind,
        stage_domain=plan.spec.domain,
        parent=parent_m.name,
        seed=cfg.seed,
        tokens_seen=parent_m.tokens_seen + plan.tokens,
        mitigation=cfg.mitigation.name,
        model_family=base_m.model_family,
        base_model=base_m.base_model,
        weights="merged",
        adapter_dir="adapter" if use_lora else "",
        lora_rank=lora.rank if use_lora else 0,
        lora_alpha=float(lora.alpha) if use_lora else 0.0,
        resolved_config={
            "run": _run_identity(cfg),
            "eval": _as_plain(cfg.budget.eval),
            "stage": record,
            **paths,
        },
        wall_time_s=round(wall_time_s, 3),
        hardware=hardware(device),
        library_versions=library_versions(),
    )


def _as_plain(obj: Any) -> Any:
    import dataclasses

    d = dataclasses.asdict(obj)
    return json.loads(json.dumps(d))
