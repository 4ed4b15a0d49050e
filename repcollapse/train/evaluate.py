"""Behavioural evaluation of one checkpoint -> the dict written to ``behavior.json``.

* scores per domain: greedy generations on the first ``n_generate`` eval records of each pool,
  scored by ``repcollapse.train.scorers.score_completion``; preference: win rate of chosen over rejected by
  summed log-probability (``score_preference``);
* target_score = the stage domain's score; retention = mean score over the other SFT domains;
* calibration and validation loss, teacher forced on held-out references: per response token,
  confidence = max prob, correct = argmax == target; ECE with equal-width bins over the tokens of
  every domain pooled; val_loss = mean over domains of the per-token NLL;
* future learning: per future task a fixed-budget LoRA adaptation (same steps, data, seed and
  learning rate for every checkpoint) scored at a few step counts; final score and the area under
  the score-vs-steps curve (trapezoid, divided by the step range, so in score units).

Every subset is "the first n" of a fixed file, so every checkpoint sees the same examples.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from repcollapse.train.config import SFT_DOMAINS, EvalSettings
from repcollapse.train.hf import load_model, load_tokenizer, resolve_device
from repcollapse.train.pools import IGNORE, DataDir, encode_pair, encode_sft, prompt_ids

Scorer = Callable[[dict[str, Any], str], float]
SCORER_ERRORS: list[str] = []
"""Scorer exceptions of the current evaluation (scored 0 and reported in behavior.json)."""


def _autocast(device: str) -> Any:
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def generate(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int | Sequence[int],
    batch_size: int,
    device: str,
) -> list[str]:
    """Greedy completions of chat-formatted prompts, left-padded batches.

    ``max_new_tokens`` may be one cap per prompt: prompts are then batched by cap (largest
    first), each batch generates to its largest cap and every completion is cut at its own. A
    greedy completion cut at k tokens is the completion generated with cap k, so prompts of
    several domains share batches: a decoding step of a small model on a CPU costs about the
    same for 8 or 40 sequences (measured on SmolLM2: 40 prompts x 48 tokens in 29 s with
    batches of 8, 13 s in one batch of 40).
    """
    caps = (
        [int(max_new_tokens)] * len(prompts)
        if isinstance(max_new_tokens, int)
        else [int(c) for c in max_new_tokens]
    )
    if len(caps) != len(prompts):
        raise ValueError(f"generate: {len(caps)} caps for {len(prompts)} prompts")
    order = sorted(range(len(prompts)), key=lambda i: -caps[i])  # stable: same caps keep order
    out: dict[int, str] = {}
    pad = tok.pad_token_id
    was_training = model.training
    model.eval()
    for i in range(0, len(order), batch_size):
        batch = order[i : i + batch_size]
        ids = [prompt_ids(tok, prompts[j]) for j in batch]
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
        with _autocast(device):
            gen = model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                max_new_tokens=max(caps[j] for j in batch),
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=pad,
                eos_token_id=tok.eos_token_id,
            )
        for row, j in enumerate(batch):
            out[j] = tok.decode(gen[row, width : width + caps[j]], skip_special_tokens=True)
    model.train(was_training)
    return [out[j] for j in range(len(prompts))]


def _pad_right(
    batch: Sequence[dict[str, list[int]]], pad: int, device: str
) -> dict[str, torch.Tensor]:
    width = max(len(e["input_ids"]) for e in batch)
    ids = [e["input_ids"] + [pad] * (width - len(e["input_ids"])) for e in batch]
    labels = [e["labels"] + [IGNORE] * (width - len(e["labels"])) for e in batch]
    mask = [[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in batch]
    return {
        "input_ids": torch.tensor(ids, device=device),
        "labels": torch.tensor(labels, device=device),
        "attention_mask": torch.tensor(mask, device=device),
    }


def _selected_logits(
    model: Any, input_ids: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    """Logits (n_kept, vocab) at the positions ``keep`` (bool, batch x seq) only.

    The vocabulary projection dominates teacher-forced evaluation (49k-262k classes); models
    whose forward takes a boolean ``logits_to_keep`` project just the kept positions.
    """
    try:
        logits = model(input_ids=input_ids, attention_mask=mask, logits_to_keep=keep).logits
        if logits.dim() == 2 and logits.shape[0] == int(keep.sum()):
            return logits.float()
    except (TypeError, IndexError, RuntimeError):
        pass
    return model(input_ids=input_ids, attention_mask=mask).logits[keep].float()


@torch.no_grad()
def token_stats(
    model: Any,
    tok: Any,
    encoded: Sequence[dict[str, list[int]]],
    *,
    device: str,
    batch_size: int = 4,
) -> dict[str, torch.Tensor]:
    """Per response token: NLL, max prob, argmax == target (teacher forced), as flat tensors."""
    model.eval()
    nll, conf, correct = [], [], []
    for i in range(0, len(encoded), batch_size):
        b = _pad_right(encoded[i : i + batch_size], tok.pad_token_id, device)
        target = b["labels"][:, 1:]
        keep = torch.zeros_like(b["labels"], dtype=torch.bool)
        keep[:, :-1] = target != IGNORE  # position t predicts token t + 1
        with _autocast(device):
            logits = _selected_logits(model, b["input_ids"], b["attention_mask"], keep)
        lp = torch.log_softmax(logits, dim=-1)
        tgt = target[target != IGNORE]
        nll.append(-lp.gather(1, tgt[:, None])[:, 0])
        mx, arg = lp.max(dim=-1)
        conf.append(mx.exp())
        correct.append((arg == tgt).float())
    cat = lambda xs: torch.cat(xs).cpu().double() if xs else torch.zeros(0, dtype=torch.float64)  # noqa: E731
    return {"nll": cat(nll), "conf": cat(conf), "correct": cat(correct)}


def expected_calibration_error(
    conf: torch.Tensor, correct: torch.Tensor, bins: int = 15
) -> float | None:
    """ECE with ``bins`` equal-width confidence bins (weights = bin counts / N)."""
    n = conf.numel()
    if n == 0:
        return None
    idx = torch.clamp((conf * bins).long(), max=bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        cnt = int(sel.sum())
        if cnt:
            ece += cnt / n * abs(float(conf[sel].mean()) - float(correct[sel].mean()))
    return ece


@torch.no_grad()
def response_logprob(
    model: Any, enc: dict[str, list[int]], completion: list[int], device: str
) -> float:
    """Summed log-probability of ``completion`` after the prompt (teacher forced)."""
    ids = enc["prompt_ids"] + completion
    x = torch.tensor([ids], device=device)
    keep = torch.zeros_like(x, dtype=torch.bool)
    keep[0, len(enc["prompt_ids"]) - 1 : -1] = True
    with _autocast(device):
        logits = _selected_logits(model, x, torch.ones_like(x), keep)
    tgt = torch.tensor(completion, device=logits.device)
    return float(torch.log_softmax(logits, dim=-1).gather(1, tgt[:, None]).sum())


def generation_cap(tok: Any, records: Sequence[dict[str, Any]], cap: int) -> int:
    """Generation is the slowest part of CPU evaluation: stop at 1.5x the longest reference
    (+8 tokens), so short-answer domains do not pay for the longest domain's budget."""
    refs = [r["response"] for r in records if isinstance(r.get("response"), str)]
    if refs:
        longest = max(len(tok(x, add_special_tokens=False)["input_ids"]) for x in refs)
        cap = min(cap, int(1.5 * longest) + 8)
    return cap


def _score(records: Sequence[dict[str, Any]], comps: Sequence[str], scorer: Scorer) -> float:
    from repcollapse.train.scorers.sandbox import SandboxUnavailable

    total = 0.0
    for r, c in zip(records, comps, strict=True):
        try:
            total += float(scorer(r, c))
        except SandboxUnavailable:  # not one bad record: every code score would be a fake 0
            raise
        except Exception as e:  # noqa: BLE001 - one bad record must not discard a trained stage
            SCORER_ERRORS.append(f"{r.get('id')}: {type(e).__name__}: {e}")
    return total / len(records)


def score_domains(
    model: Any,
    tok: Any,
    per_domain: dict[str, Sequence[dict[str, Any]]],
    s: EvalSettings,
    device: str,
    scorer: Scorer,
    max_new_tokens: int | None = None,
) -> dict[str, float | None]:
    """Every domain's generation score from one batched generation over all their prompts,
    each domain keeping its own cap (at most ``max_new_tokens``, default the settings')."""
    prompts, caps, spans = [], [], {}
    for d, recs in per_domain.items():
        cap = generation_cap(tok, recs, max_new_tokens or s.max_new_tokens) if recs else 0
        spans[d] = (len(prompts), len(prompts) + len(recs))
        prompts += [r["prompt"] for r in recs]
        caps += [cap] * len(recs)
    comps = (
        generate(
            model, tok, prompts, max_new_tokens=caps, batch_size=s.gen_batch_size, device=device
        )
        if prompts
        else []
    )
    return {
        d: _score(recs, comps[spans[d][0] : spans[d][1]], scorer) if recs else None
        for d, recs in per_domain.items()
    }


def auc(steps: Sequence[int], scores: Sequence[float]) -> float:
    """Trapezoid area under score(step) divided by the step range (a mean score in [0, 1])."""
    if len(steps) < 2 or steps[-1] == steps[0]:
        return float(scores[-1])
    area = sum(
        (steps[i + 1] - steps[i]) * (scores[i] + scores[i + 1]) / 2 for i in range(len(steps) - 1)
    )
    return area / (steps[-1] - steps[0])


def future_adaptation(
    ckpt_dir: str | Path,
    train_records: Sequence[dict[str, Any]],
    eval_records: Sequence[dict[str, Any]],
    s: EvalSettings,
    *,
    seed: int,
    device: str,
    max_length: int,
    scorer: Scorer,
) -> dict[str, Any]:
    """Fixed-budget LoRA adaptation to one future task, scored at ``s.future_eval_at`` steps."""
    from peft import LoraConfig, get_peft_model

    from repcollapse.train.config import TARGET_MODULES

    tok = load_tokenizer(ckpt_dir)
    model = load_model(ckpt_dir, device, train=True)
    torch.manual_seed(seed)  # the adapter's random init is part of the fixed protocol
    targets = [m for m in TARGET_MODULES if any(n.endswith(m) for n, _ in model.named_modules())]
    cfg = LoraConfig(
        r=s.future_rank,
        lora_alpha=2 * s.future_rank,
        lora_dropout=0.0,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, cfg)
    encoded = [
        e
        for e in (encode_sft(tok, r["prompt"], r["response"], max_length) for r in train_records)
        if e
    ]
    if not encoded:
        raise ValueError("future task has no usable training example")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s.future_lr)
    rng = random.Random(seed)
    order: list[int] = []
    curve: list[list[float]] = []
    for step in range(s.future_steps + 1):
        if step in s.future_eval_at:
            score = score_domains(
                model, tok, {"task": eval_records}, s, device, scorer, s.future_max_new_tokens
            )["task"]
            curve.append([step, score or 0.0])
        if step == s.future_steps:
            break
        model.train()
        if len(order) < s.future_batch_size:
            perm = list(range(len(encoded)))
            rng.shuffle(perm)
            order.extend(perm * max(1, s.future_batch_size // len(perm) + 1))
        batch = [encoded[order.pop(0)] for _ in range(s.future_batch_size)]
        b = _pad_right(batch, tok.pad_token_id, device)
        with _autocast(device):
            loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    steps = [int(c[0]) for c in curve]
    scores = [float(c[1]) for c in curve]
    return {"final": scores[-1], "auc": auc(steps, scores), "curve": curve}


def _default_scorers() -> tuple[Scorer, Callable[[float, float], float]]:
    from repcollapse.train.scorers import score_completion, score_preference

    return score_completion, score_preference


def evaluate_checkpoint(
    ckpt_dir: str | Path,
    data_dir: str | Path,
    settings: EvalSettings,
    *,
    target_domain: str | None,
    device: str | None = None,
    seed: int = 0,
    max_length: int = 256,
    scorer: Scorer | None = None,
    preference_scorer: Callable[[float, float], float] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a checkpoint directory against a data directory; returns behavior.json's dict."""
    from tqdm.auto import tqdm

    t0 = time.time()
    device = resolve_device(device)
    if scorer is None or preference_scorer is None:
        default_c, default_p = _default_scorers()
        scorer = scorer or default_c
        preference_scorer = preference_scorer or default_p
    torch.manual_seed(seed)
    SCORER_ERRORS.clear()
    tok = load_tokenizer(ckpt_dir)
    model = load_model(ckpt_dir, device, train=False)
    data = DataDir(data_dir, tok, max_length)
    domains = [d for d in SFT_DOMAINS if data.has_pool(d, "eval")]
    tasks = list(settings.future_tasks) or data.future_tasks()
    bar = tqdm(
        total=len(domains) + 1 + len(tasks),
        desc=f"eval {Path(ckpt_dir).name}",
        leave=False,
        disable=not progress,
    )
    scores: dict[str, float | None] = {}
    vloss: dict[str, float | None] = {}
    conf, correct = [], []
    timing = {"generate": 0.0, "teacher_forced": 0.0, "preference": 0.0, "future": 0.0}
    t = time.time()
    scores.update(
        score_domains(
            model,
            tok,
            {d: data.records(d, "eval")[: settings.n_generate] for d in domains},
            settings,
            device,
            scorer,
        )
    )
    timing["generate"] += time.time() - t
    for d in domains:
        t = time.time()
        enc = [e for e in data.encoded(d, "eval")[: settings.n_teacher_forced] if e]
        st = token_stats(model, tok, enc, device=device)
        timing["teacher_forced"] += time.time() - t
        vloss[d] = float(st["nll"].mean()) if st["nll"].numel() else None
        conf.append(st["conf"])
        correct.append(st["correct"])
        bar.update(1)
    t = time.time()
    if data.has_pool("preference", "eval"):
        wins = []
        for r in data.records("preference", "eval")[: settings.n_generate]:
            enc = encode_pair(tok, r["prompt"], r["chosen"], r["rejected"], max_length)
            if enc is None:
                continue
            lc = response_logprob(model, enc, enc["chosen_ids"], device)
            lr = response_logprob(model, enc, enc["rejected_ids"], device)
            wins.append(float(preference_scorer(lc, lr)))
        scores["preference"] = sum(wins) / len(wins) if wins else None
    timing["preference"] = time.time() - t
    bar.update(1)
    del model
    future: dict[str, Any] = {}
    t = time.time()
    for task in tasks:
        tr = data.future_records(task, "train")[: settings.future_n_train]
        ev = data.future_records(task, "eval")[: settings.future_n_eval]
        future[task] = future_adaptation(
            ckpt_dir,
            tr,
            ev,
            settings,
            seed=seed,
            device=device,
            max_length=max_length,
            scorer=scorer,
        )
        bar.update(1)
    timing["future"] = time.time() - t
    bar.close()
    all_conf = torch.cat(conf) if conf else torch.zeros(0)
    all_correct = torch.cat(correct) if correct else torch.zeros(0)
    others = [scores[d] for d in domains if d != target_domain and scores.get(d) is not None]
    vals = [v for v in vloss.values() if v is not None]
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {
        "target_domain": target_domain,
        "target_score": scores.get(target_domain) if target_domain else None,
        "retention": mean(others),
        "ece": expected_calibration_error(all_conf, all_correct, settings.ece_bins),
        "val_loss": mean(vals),
        "future_score": mean([f["final"] for f in future.values()]),
        "future_auc": mean([f["auc"] for f in future.values()]),
        "scores": scores,
        "val_loss_per_domain": vloss,
        "future": future,
        "n_calibration_tokens": int(all_conf.numel()),
        "scorer_errors": list(SCORER_ERRORS),
        "eval_settings": _settings_dict(settings, max_length, seed),
        "eval_wall_time_s": round(time.time() - t0, 3),
        "eval_timing_s": {k: round(v, 3) for k, v in timing.items()},
    }


def _settings_dict(settings: EvalSettings, max_length: int, seed: int) -> dict[str, Any]:
    import dataclasses

    d = dataclasses.asdict(settings)
    d.update(max_length=max_length, seed=seed)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
