"""A sequence of stages from a RunConfig: planning, training, evaluation, manifests, resumption.

Layout: ``RUN_DIR/<sequence>/<NN>-<stage>/`` with NN the stage index (the base is index 0 and
lives in its own directory). A stage directory is complete when it has ``manifest.json`` (written
last, atomically); re-running skips complete stages and retrains an incomplete one from scratch.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from repcollapse.store_schema.manifest import CheckpointManifest, read_manifest, write_json_atomic
from repcollapse.train.config import RunConfig
from repcollapse.train.hf import hardware, library_versions, load_tokenizer, resolve_device
from repcollapse.train.pools import (
    DataDir,
    sft_loss_tokens,
)
from repcollapse.train.stage_plan import (
    StagePlan,
    as_plain,
    base_key,
    checkpoint_name,
    copy_stage,
    plan_sequence,
    reusable_stages,
    run_identity,
    stage_key,
    train_seed,
)


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
    identity = run_identity(cfg)
    parent_dir, parent_m = base, base_m
    parent_key = base_key(base)
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
            copy_stage(source, ckpt)
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
            "run": run_identity(cfg),
            "eval": as_plain(cfg.budget.eval),
            "stage": record,
            **paths,
        },
        wall_time_s=round(wall_time_s, 3),
        hardware=hardware(device),
        library_versions=library_versions(),
    )
