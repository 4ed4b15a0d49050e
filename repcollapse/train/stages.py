"""One post-training stage: train on a prepared token-budgeted set, save adapter and merged weights.

Each LoRA stage trains a fresh adapter on top of its input checkpoint (whose weights already
contain every earlier adapter, merged), saves that adapter under ``adapter/`` (peft format,
safetensors) and the merged model at the top of the directory, so every stage's update B_s A_s
is recoverable on its own.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repcollapse.train.config import Budget, LoraSettings, Mitigation, StageSpec
from repcollapse.train.hf import load_model, load_tokenizer


@dataclass
class StageResult:
    steps: int
    losses: list[float]
    wall_time_s: float
    regularisers: dict[str, float] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)


def _progress_callback(desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class _Bar(TrainerCallback):
        """One tqdm bar per stage with the latest loss (Trainer's own printer is removed)."""

        def __init__(self) -> None:
            self.bar: Any = None

        def on_train_begin(self, args, state, control, **kw):  # noqa: ANN001
            self.bar = tqdm(
                total=state.max_steps, desc=desc, disable=not enabled, leave=False, unit="step"
            )

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            self.bar.update(1)

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001
            if logs and "loss" in logs and self.bar is not None:
                self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

        def on_train_end(self, args, state, control, **kw):  # noqa: ANN001
            self.bar.close()

    return _Bar()


def lora_config(lora: LoraSettings) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def tensorboard_dir(out_dir: Path) -> Path:
    """Where a stage's TensorBoard event files are kept (``report_to = "tensorboard"``):
    ``RUN_DIR/<sequence>/tensorboard/<NN-stage>/``, beside the checkpoints and not inside one,
    so a checkpoint's files stay what extract and the stage-reuse digests expect;
    ``tensorboard --logdir RUN_DIR`` shows every stage of every sequence."""
    return out_dir.parent / "tensorboard" / out_dir.name


def _keep_tensorboard(workdir: Path, out_dir: Path) -> None:
    """The Trainer writes event files under its output_dir (removed after the stage): move them."""
    runs = workdir / "runs"
    if not runs.is_dir():
        return
    dest = tensorboard_dir(out_dir)
    if dest.exists():
        shutil.rmtree(dest)  # a stage retrained after an interruption: its old curve goes
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(runs), str(dest))


def _common_args(
    budget: Budget,
    lr: float,
    seed: int,
    device: str,
    workdir: Path,
    n_examples: int,
    report_to: str = "none",
) -> dict[str, Any]:
    on_gpu = device.startswith("cuda")
    steps = math.ceil(n_examples / (budget.batch_size * budget.grad_accum))
    # Whole warmup steps, rounded down: HF's warmup starts at lr 0, so a ratio rounded up would
    # spend the only step of a very short stage (a refresh) at learning rate zero.
    warmup = int(budget.warmup_ratio * steps)
    return {
        "output_dir": str(workdir),
        "per_device_train_batch_size": budget.batch_size,
        "gradient_accumulation_steps": budget.grad_accum,
        "learning_rate": lr,
        "lr_scheduler_type": budget.lr_scheduler,
        "warmup_steps": warmup,
        "weight_decay": budget.weight_decay,
        "max_grad_norm": budget.max_grad_norm,
        "num_train_epochs": 1,
        "logging_steps": 1,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": report_to,  # RunConfig.report_to; train_log.json is written either way
        "run_name": f"{workdir.parent.parent.name}/{workdir.parent.name}",
        "seed": seed,
        "data_seed": seed,
        "bf16": on_gpu,  # TRL defaults bf16 on, which a CPU run must not inherit
        "use_cpu": not on_gpu,
        "gradient_checkpointing": False,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        "max_length": budget.max_length,
    }


def train_stage(
    spec: StageSpec,
    examples: list[dict[str, list[int]]],
    input_dir: str | Path,
    out_dir: str | Path,
    *,
    budget: Budget,
    lora: LoraSettings,
    mitigation: Mitigation,
    seed: int,
    prior_adapters: list[Path] = (),  # type: ignore[assignment]
    device: str = "cpu",
    progress: bool = True,
    report_to: str = "none",
) -> StageResult:
    """Train one stage on pre-tokenised ``examples``; write weights (not the manifest) to out_dir."""
    import datasets
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import DPOConfig, SFTConfig

    from repcollapse.train.mitigations import (
        DiversitySpec,
        RegularizedDPOTrainer,
        RegularizedSFTTrainer,
        prior_subspaces,
    )

    datasets.disable_progress_bars()  # the per-stage tqdm bar is enough
    t0 = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = out_dir / ".trainer"
    torch.manual_seed(seed)
    tok = load_tokenizer(input_dir)
    model = load_model(input_dir, device, train=True)
    use_lora = spec.kind != "full"
    peft_cfg = lora_config(lora) if use_lora else None
    regs: dict[str, float] = {}
    bases = None
    if use_lora and mitigation.decorrelate_weight > 0 and prior_adapters:
        bases = prior_subspaces(prior_adapters, mitigation.decorrelate_k)
        regs["decorrelate"] = mitigation.decorrelate_weight
    diversity = None
    n_states = model.config.get_text_config().num_hidden_layers + 1
    bad = [x for x in mitigation.diversity_layers if not -n_states <= x < n_states]
    if mitigation.diversity_weight > 0 and bad:
        raise ValueError(
            f"config field 'mitigation.diversity_layers': expected indices in [-{n_states}, {n_states - 1}] "
            f"for this model ({n_states} hidden states), found {bad}"
        )
    if spec.kind != "dpo" and mitigation.diversity_weight > 0:
        diversity = DiversitySpec(
            mitigation.diversity_weight,
            mitigation.diversity_layers,
            mitigation.diversity_variance_floor,
        )
        regs["diversity"] = mitigation.diversity_weight
    dataset = Dataset.from_list(examples)
    callbacks = [_progress_callback(f"{spec.name} ({spec.kind})", progress)]
    if spec.kind == "dpo":
        args = DPOConfig(
            **_common_args(
                budget,
                0.0 if mitigation.noop else budget.dpo_learning_rate,
                seed,
                device,
                workdir,
                len(examples),
                report_to,
            ),
            beta=budget.dpo_beta,
            precompute_ref_log_probs=False,
        )
        # With a peft_config the reference is the input checkpoint itself (adapter disabled).
        trainer: Any = RegularizedDPOTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tok,
            peft_config=peft_cfg,
            callbacks=callbacks,
        )
    else:
        lr = budget.full_learning_rate if spec.kind == "full" else budget.learning_rate
        lr = 0.0 if mitigation.noop else lr  # the matched no-op control
        args = SFTConfig(
            **_common_args(budget, lr, seed, device, workdir, len(examples), report_to),
            completion_only_loss=None,
        )
        trainer = RegularizedSFTTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tok,
            peft_config=peft_cfg,
            callbacks=callbacks,
        )
    trainer.remove_callback(PrinterCallback)
    trainer.rc_diversity = diversity
    trainer.rc_bases = bases
    trainer.rc_decorrelate_weight = mitigation.decorrelate_weight
    trainer.train()
    history = [dict(h) for h in trainer.state.log_history]
    losses = [float(h["loss"]) for h in history if "loss" in h]
    trained = trainer.model
    if use_lora:
        trained.save_pretrained(out_dir / "adapter", safe_serialization=True)
        merged = trained.merge_and_unload()
    else:
        merged = trained
    merged.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    _keep_tensorboard(workdir, out_dir)
    shutil.rmtree(workdir, ignore_errors=True)
    return StageResult(
        steps=int(trainer.state.global_step),
        losses=losses,
        wall_time_s=time.time() - t0,
        regularisers=regs,
        log_history=history,
    )
