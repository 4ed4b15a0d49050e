"""Behavioural evaluation of one checkpoint -> the dict written to ``behavior.json``.

Every number carries its standard error and its n (``<key>_se``, ``<key>_n``; the estimators
are in ``repcollapse.train.uncertainty``), and the per-item values are kept (``items``) so that
two checkpoints, scored on the same items, can be compared item by item.

* scores per domain: greedy generations on the first ``n_generate`` eval records of each pool,
  scored by ``repcollapse.train.scorers.score_completion`` (binomial SE); preference: win rate
  of chosen over rejected by summed log-probability (``score_preference``);
* target_score = the stage domain's score; retention = mean score over the other SFT domains;
* teacher forced on the first ``n_teacher_forced`` held-out references of each domain, one
  forward pass: the NLL per response token (``nll``, SE over items), the answer
  log-probability where an item has a short answer (``answer_logprob``), and calibration: per
  response token, confidence = max prob, correct = argmax == target, ECE with equal-width bins
  over the tokens of every domain pooled (SE: bootstrap over items); val_loss = mean over
  domains of the NLL; target_nll / retention_nll as for the scores;
* future learning (``repcollapse.train.future``): per future task a fixed-budget LoRA
  adaptation measured after each of ``future_eval_at`` steps: accuracy and held-out NLL curves,
  their areas, and the steps to a fixed NLL threshold.

Every subset is "the first n" of a fixed file, so every checkpoint sees the same examples.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from repcollapse.train.config import SFT_DOMAINS, EvalSettings
from repcollapse.train.future import future_adaptation
from repcollapse.train.greedy import greedy_batch
from repcollapse.train.hf import load_model, load_tokenizer, resolve_device
from repcollapse.train.pools import DataDir, encode_pair, prompt_ids
from repcollapse.train.stops import StopRule, stop_rule
from repcollapse.train.teacher import (
    answer_positions,
    autocast,
    expected_calibration_error,
    response_logprob,
    token_stats,
)
from repcollapse.train.uncertainty import (
    Estimate,
    bootstrap_se,
    combine_mean,
    estimate,
    mean_se,
    ratio_estimate,
    score_estimate,
)

Scorer = Callable[[dict[str, Any], str], float]
SCORER_ERRORS: list[str] = []
"""Scorer exceptions of the current evaluation (scored 0 and reported in behavior.json)."""
GENERATION_INFO: dict[str, int] = {"steps": 0, "rows": 0, "stopped_by_rule": 0}
"""Decoding steps, completions, and completions a stop rule ended (of the current evaluation)."""


def generate(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int | Sequence[int],
    batch_size: int,
    device: str,
    stops: Sequence[StopRule | None] | None = None,
) -> list[str]:
    """Greedy completions of chat-formatted prompts (``repcollapse.train.greedy``).

    ``max_new_tokens`` may be one cap per prompt: prompts are batched by cap (largest first)
    and every row stops at its own cap, at end of sequence, or when ``stops[i]`` says its
    scored part is complete; finished rows leave the batch. Prompts of several domains share
    batches: a decoding step of a small model on a CPU costs about the same for 8 or 40
    sequences (measured on SmolLM2: 40 prompts x 48 tokens in 29 s with batches of 8, 13 s in
    one batch of 40). Inside a batch the prompts are read in groups of similar length and
    decoded together (``greedy_batch``), so a long HumanEval prompt does not pad every row.
    """
    caps = (
        [int(max_new_tokens)] * len(prompts)
        if isinstance(max_new_tokens, int)
        else [int(c) for c in max_new_tokens]
    )
    if len(caps) != len(prompts):
        raise ValueError(f"generate: {len(caps)} caps for {len(prompts)} prompts")
    if stops is not None and len(stops) != len(prompts):
        raise ValueError(f"generate: {len(stops)} stop rules for {len(prompts)} prompts")
    ids = [prompt_ids(tok, p) for p in prompts]
    # largest cap first, then shortest prompt: when there are several batches, each holds rows
    # that run about as long and read prompts of about the same width (greedy_batch prefills
    # by length inside a batch too); results go back to the caller's order.
    order = sorted(range(len(prompts)), key=lambda i: (-caps[i], len(ids[i]), i))
    out: dict[int, str] = {}
    was_training = model.training
    model.eval()

    def decode(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=True)

    for i in range(0, len(order), batch_size):
        batch = order[i : i + batch_size]
        rules = [stops[j] for j in batch] if stops is not None else None
        gen, steps = greedy_batch(
            model,
            [ids[j] for j in batch],
            [caps[j] for j in batch],
            pad_id=tok.pad_token_id,
            eos_id=tok.eos_token_id,
            device=device,
            decode=decode,
            stops=rules,
            autocast=autocast(device),
        )
        GENERATION_INFO["steps"] += steps
        GENERATION_INFO["rows"] += len(batch)
        for row, j in enumerate(batch):
            text = decode(gen[row])
            out[j] = text
            rule = rules[row] if rules is not None else None
            if rule is not None and len(gen[row]) < caps[j] and rule(text):
                GENERATION_INFO["stopped_by_rule"] += 1
    model.train(was_training)
    return [out[j] for j in range(len(prompts))]


def generation_cap(tok: Any, records: Sequence[dict[str, Any]], cap: int) -> int:
    """Stop at 1.5x the longest reference (+8 tokens), so short-answer domains do not pay
    for the longest domain's budget."""
    refs = [r["response"] for r in records if isinstance(r.get("response"), str)]
    if refs:
        longest = max(len(tok(x, add_special_tokens=False)["input_ids"]) for x in refs)
        cap = min(cap, int(1.5 * longest) + 8)
    return cap


def _item_scores(
    records: Sequence[dict[str, Any]], comps: Sequence[str], scorer: Scorer
) -> list[float]:
    """Per-item scores; a scorer exception scores that item 0 and is reported."""
    from repcollapse.train.scorers.sandbox import SandboxUnavailable

    out = []
    for r, c in zip(records, comps, strict=True):
        try:
            out.append(float(scorer(r, c)))
        except SandboxUnavailable:  # not one bad record: every code score would be a fake 0
            raise
        except Exception as e:  # noqa: BLE001 - one bad record must not discard a trained stage
            SCORER_ERRORS.append(f"{r.get('id')}: {type(e).__name__}: {e}")
            out.append(0.0)
    return out


def _score(records: Sequence[dict[str, Any]], comps: Sequence[str], scorer: Scorer) -> float:
    return sum(_item_scores(records, comps, scorer)) / len(records)


def score_items(
    model: Any,
    tok: Any,
    per_domain: Mapping[str, Sequence[dict[str, Any]]],
    s: EvalSettings,
    device: str,
    scorer: Scorer,
    max_new_tokens: int | None = None,
) -> dict[str, list[float]]:
    """Per-item generation scores of every domain from one batched generation over all their
    prompts, each domain keeping its own cap (at most ``max_new_tokens``, default the
    settings') and each record its stop rule (``repcollapse.train.stops``)."""
    prompts, caps, rules, spans = [], [], [], {}
    for d, recs in per_domain.items():
        cap = generation_cap(tok, recs, max_new_tokens or s.max_new_tokens) if recs else 0
        spans[d] = (len(prompts), len(prompts) + len(recs))
        prompts += [r["prompt"] for r in recs]
        caps += [cap] * len(recs)
        rules += [stop_rule(r) if s.stop_rules else None for r in recs]
    comps = (
        generate(
            model,
            tok,
            prompts,
            max_new_tokens=caps,
            batch_size=s.gen_batch_size,
            device=device,
            stops=rules,
        )
        if prompts
        else []
    )
    return {
        d: _item_scores(recs, comps[spans[d][0] : spans[d][1]], scorer)
        for d, recs in per_domain.items()
    }


def _default_scorers() -> tuple[Scorer, Callable[[float, float], float]]:
    from repcollapse.train.scorers import score_completion, score_preference

    return score_completion, score_preference


def _put(out: dict[str, Any], key: str, est: Estimate) -> None:
    """``key``, ``key_se`` and ``key_n`` at the top level of behavior.json."""
    out[key], out[f"{key}_se"], out[f"{key}_n"] = est["value"], est["se"], est["n"]


def _ece_estimate(st: Sequence[dict[str, Any]], bins: int) -> Estimate:
    """ECE over every domain's tokens pooled; SE by a bootstrap over items (all domains)."""
    conf = torch.cat([x["conf"] for x in st]) if st else torch.zeros(0)
    correct = torch.cat([x["correct"] for x in st]) if st else torch.zeros(0)
    ranges, start = [], 0
    for x in st:
        for t in x["n_tokens"]:
            ranges.append((start, start + t))
            start += t
    value = expected_calibration_error(conf, correct, bins)

    def stat(idx: Sequence[int]) -> float | None:
        sel = torch.cat([torch.arange(*ranges[i]) for i in idx])
        return expected_calibration_error(conf[sel], correct[sel], bins)

    se, _ = bootstrap_se(len(ranges), stat) if value is not None else (None, 0)
    return estimate(value, se, len(ranges))


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
    GENERATION_INFO.update(steps=0, rows=0, stopped_by_rule=0)
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
    timing = {"generate": 0.0, "teacher_forced": 0.0, "preference": 0.0, "future": 0.0}
    t = time.time()
    gen_records = {d: data.records(d, "eval")[: settings.n_generate] for d in domains}
    items = score_items(model, tok, gen_records, settings, device, scorer)
    timing["generate"] += time.time() - t
    score_est: dict[str, Estimate] = {d: score_estimate(items[d]) for d in domains}
    nll_est: dict[str, Estimate] = {}
    ans_est: dict[str, Estimate] = {}
    per_item: dict[str, dict[str, Any]] = {}
    stats = []
    for d in domains:
        t = time.time()
        pairs = [
            (r, e) for r, e in zip(data.records(d, "eval"), data.encoded(d, "eval"), strict=True)
        ][: settings.n_teacher_forced]
        pairs = [(r, e) for r, e in pairs if e]
        answers = [answer_positions(tok, r, e) for r, e in pairs]
        st = token_stats(model, tok, [e for _, e in pairs], device=device, answers=answers)
        timing["teacher_forced"] += time.time() - t
        stats.append(st)
        nll_est[d] = ratio_estimate(st["nll_sum"], st["n_tokens"])
        lps = [v for v in st["answer_logprob"] if v is not None]
        if lps:
            ans_est[d] = mean_se(lps)
        per_item[d] = {
            "generated_ids": [r.get("id") for r in gen_records[d]],
            "score": items[d],
            "teacher_forced_ids": [r.get("id") for r, _ in pairs],
            "nll_sum": st["nll_sum"],
            "n_tokens": st["n_tokens"],
            "answer_logprob": st["answer_logprob"],
        }
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
        score_est["preference"] = score_estimate(wins)
        per_item["preference"] = {"score": wins}
    timing["preference"] = time.time() - t
    bar.update(1)
    del model
    future: dict[str, Any] = {}
    t = time.time()

    def future_items(m: Any, tk: Any, recs: Sequence[dict[str, Any]]) -> list[float]:
        return score_items(
            m, tk, {"task": recs}, settings, device, scorer, settings.future_max_new_tokens
        )["task"]

    for task in tasks:
        future[task] = future_adaptation(
            ckpt_dir,
            data.future_records(task, "train")[: settings.future_n_train],
            data.future_records(task, "eval")[: settings.future_n_eval],
            settings,
            seed=seed,
            device=device,
            max_length=max_length,
            item_scores=future_items,
        )
        bar.update(1)
    timing["future"] = time.time() - t
    bar.close()
    others = [d for d in domains if d != target_domain]
    out: dict[str, Any] = {"target_domain": target_domain}
    none = estimate(None, None, 0)
    _put(out, "target_score", score_est.get(target_domain, none) if target_domain else none)
    _put(out, "retention", combine_mean([score_est[d] for d in others]))
    _put(out, "ece", _ece_estimate(stats, settings.ece_bins))
    _put(out, "val_loss", combine_mean(list(nll_est.values())))
    _put(out, "target_nll", nll_est.get(target_domain, none) if target_domain else none)
    _put(out, "retention_nll", combine_mean([nll_est[d] for d in others if d in nll_est]))
    fut = list(future.values())

    def fut_est(key: str) -> Estimate:
        return combine_mean(
            [estimate(f[key], f.get(f"{key}_se"), f["n_eval"]) for f in fut if f[key] is not None]
        )

    _put(out, "future_score", fut_est("final"))
    _put(out, "future_auc", fut_est("auc"))
    _put(out, "future_nll", fut_est("nll_final"))
    _put(out, "future_nll_auc", fut_est("nll_auc"))
    reached = [f for f in fut if f["steps_to_nll"] is not None]
    # A task that never reaches the threshold has no step count: the mean over tasks is then
    # undefined (censored), not the mean of the others.
    _put(
        out,
        "future_steps_to_nll",
        fut_est("steps_to_nll") if fut and len(reached) == len(fut) else none,
    )
    n_tok = sum(int(x["conf"].numel()) for x in stats)
    out.update(
        {
            "scores": {d: e["value"] for d, e in score_est.items()},
            "scores_se": {d: e["se"] for d, e in score_est.items()},
            "scores_n": {d: e["n"] for d, e in score_est.items()},
            "val_loss_per_domain": {d: e["value"] for d, e in nll_est.items()},
            "nll": nll_est,
            "answer_logprob": ans_est,
            "future": future,
            "items": per_item,
            "n_calibration_tokens": n_tok,
            "scorer_errors": list(SCORER_ERRORS),
            "generation": dict(GENERATION_INFO),
            "eval_settings": _settings_dict(settings, max_length, seed),
            "eval_wall_time_s": round(time.time() - t0, 3),
            "eval_timing_s": {k: round(v, 3) for k, v in timing.items()},
        }
    )
    return out


def _settings_dict(settings: EvalSettings, max_length: int, seed: int) -> dict[str, Any]:
    import dataclasses

    d = dataclasses.asdict(settings)
    d.update(max_length=max_length, seed=seed)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
