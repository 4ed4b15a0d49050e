"""Behavioural numbers with known error: SEs against analytic cases, teacher-forced NLL and
answer log-probabilities against a brute-force forward on the tiny model, the future curve's
area and threshold on hand-made curves, greedy decoding with stop rules against
``model.generate``, and behavior.json's keys end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tiny_model import make_tiny_model, write_tiny_data

from repcollapse.train.future import summarise_curves
from repcollapse.train.stops import stop_rule
from repcollapse.train.uncertainty import (
    binomial_se,
    bootstrap_se,
    combine_mean,
    curve_auc,
    mean_se,
    ratio_estimate,
    score_estimate,
    steps_to_threshold,
)

# --- standard errors: analytic cases ---------------------------------------------------------


def test_binomial_se_of_an_accuracy() -> None:
    est = score_estimate([1, 0, 1, 1, 0, 0, 1, 0, 1, 1])  # p = 0.6, n = 10
    assert est["value"] == pytest.approx(0.6) and est["n"] == 10
    assert est["se"] == pytest.approx(math.sqrt(0.6 * 0.4 / 10))
    assert binomial_se(0.5, 200) == pytest.approx(0.0353553, rel=1e-5)  # the paper's old n
    assert score_estimate([1, 1, 1])["se"] == 0.0  # plug-in: no variation seen
    assert score_estimate([])["value"] is None


def test_mean_se_of_fractional_scores() -> None:
    vals = [0.5, 1.0, 0.0, 0.25]  # not all 0/1: the sample SE
    est = score_estimate(vals)
    m = sum(vals) / 4
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / 3)
    assert est["value"] == pytest.approx(m) and est["se"] == pytest.approx(sd / 2)
    assert mean_se([3.0])["se"] is None


def test_ratio_se_reduces_to_the_se_of_item_means_with_equal_tokens() -> None:
    means = [2.0, 1.0, 3.5, 0.5, 1.5]
    t = 7
    est = ratio_estimate([m * t for m in means], [t] * 5)
    plain = mean_se(means)
    assert est["value"] == pytest.approx(plain["value"])
    assert est["se"] == pytest.approx(plain["se"])


def test_ratio_se_hand_computed() -> None:
    # a = (2, 6, 4), t = (1, 2, 3): r = 12 / 6 = 2; residuals a - r t = (0, 2, -2)
    est = ratio_estimate([2.0, 6.0, 4.0], [1, 2, 3])
    assert est["value"] == pytest.approx(2.0)
    assert est["se"] == pytest.approx(math.sqrt(3 / 2 * 8) / 6)
    with pytest.raises(ValueError, match="3 numerators for 2"):
        ratio_estimate([1.0, 2.0, 3.0], [1, 2])


def test_mean_of_independent_estimates() -> None:
    a = {"value": 0.2, "se": 0.03, "n": 50}
    b = {"value": 0.6, "se": 0.04, "n": 100}
    est = combine_mean([a, b, {"value": None, "se": None, "n": 0}])
    assert est["value"] == pytest.approx(0.4)
    assert est["se"] == pytest.approx(0.05 / 2) and est["n"] == 150


def test_bootstrap_se_agrees_with_the_analytic_se_of_a_mean() -> None:
    vals = [float(i % 7) for i in range(60)]
    se, used = bootstrap_se(60, lambda idx: sum(vals[i] for i in idx) / len(idx), resamples=400)
    analytic = mean_se(vals)["se"] * math.sqrt(59 / 60)  # the bootstrap's plug-in variance
    assert used == 400 and se == pytest.approx(analytic, rel=0.15)
    again, _ = bootstrap_se(60, lambda idx: sum(vals[i] for i in idx) / len(idx), resamples=400)
    assert again == se  # fixed seed


# --- the future curve --------------------------------------------------------------------------


def test_curve_area_and_steps_to_threshold_on_a_hand_made_curve() -> None:
    steps, nll = [0, 2, 4, 8], [3.0, 2.0, 1.0, 0.5]
    # trapezoids: 2*2.5 + 2*1.5 + 4*0.75 = 11, over a range of 8
    assert curve_auc(steps, nll) == pytest.approx(11 / 8)
    assert steps_to_threshold(steps, nll, 1.5) == pytest.approx(3.0)  # halfway from 2 to 4
    assert steps_to_threshold(steps, nll, 1.0) == pytest.approx(4.0)
    assert steps_to_threshold(steps, nll, 3.5) == 0.0
    assert steps_to_threshold(steps, nll, 0.1) is None  # never reached within the budget
    assert curve_auc([0], [0.7]) == 0.7


def test_curve_summaries_pool_items_and_carry_ses() -> None:
    steps = [0, 1, 2]
    scores = [[0, 0, 1, 0], [0, 1, 1, 0], [1, 1, 1, 0]]
    tokens = [2, 2, 4, 2]
    nll = [[6.0, 4.0, 8.0, 6.0], [4.0, 2.0, 4.0, 5.0], [2.0, 1.0, 2.0, 4.0]]
    out = summarise_curves(steps, scores, nll, tokens, threshold=1.0)
    assert out["final"] == pytest.approx(0.75)
    assert out["final_se"] == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    # pooled NLL per token: 24/10, 15/10, 9/10
    assert [c[1] for c in out["nll_curve"]] == pytest.approx([2.4, 1.5, 0.9])
    assert out["nll_auc"] == pytest.approx(curve_auc(steps, [2.4, 1.5, 0.9]))
    assert out["auc"] == pytest.approx(curve_auc(steps, [0.25, 0.5, 0.75]))
    # crossing 1.0 between steps 1 (1.5) and 2 (0.9): 1 + 0.5 / 0.6
    assert out["steps_to_nll"] == pytest.approx(1 + 0.5 / 0.6)
    assert out["n_eval"] == 4 and out["n_eval_tokens"] == 10
    item_auc = [curve_auc(steps, [row[i] for row in scores]) for i in range(4)]
    assert out["auc_se"] == pytest.approx(mean_se(item_auc)["se"])
    assert out["steps_to_nll_se"] is not None and out["nll_auc_se"] > 0


# --- stop rules ----------------------------------------------------------------------------


def test_stop_rules_fire_only_when_the_scored_part_is_complete() -> None:
    code = stop_rule({"domain": "code", "meta": {"entry_point": "f"}})
    assert code is not None
    assert not code("```python\ndef f(x):\n    return x")  # open fence
    assert not code("```python\ndef g(x):\n    return x\n```\n")  # closed, other function
    assert code("Here:\n```python\ndef f(x):\n    return x\n```")
    math_rule = stop_rule({"domain": "math"})
    assert math_rule is not None
    assert not math_rule("so 12 + 3 = 15.\nAnswer: 1")  # the number may go on
    assert math_rule("so 12 + 3 = 15.\nAnswer: 15\n")
    assert not math_rule("Answer: none yet\n")
    safety = stop_rule({"domain": "safety"})
    assert safety is not None and not safety("I can't help.") and safety("x" * 300)
    assert stop_rule({"domain": "general"}) is None


# --- the tiny model: brute force ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from repcollapse.train.base import materialize_base

    root = tmp_path_factory.mktemp("se")
    model = make_tiny_model(root / "tiny")
    data = write_tiny_data(root / "data", n_train=16, n_eval=4)
    return {"root": root, "base": materialize_base(root / "base", model), "data": data}


def test_teacher_forced_nll_and_answer_logprob_equal_brute_force(tiny: dict[str, Path]) -> None:
    from repcollapse.train.hf import load_model, load_tokenizer
    from repcollapse.train.pools import IGNORE, DataDir
    from repcollapse.train.teacher import answer_positions, token_stats

    tok = load_tokenizer(tiny["base"])
    model = load_model(tiny["base"], "cpu", train=False)
    data = DataDir(tiny["data"], tok, 64)
    recs, encs = data.records("math", "eval"), data.encoded("math", "eval")
    pairs = [(r, e) for r, e in zip(recs, encs, strict=True) if e]
    answers = [answer_positions(tok, r, e) for r, e in pairs]
    assert all(answers), "every tiny math reference contains its answer"
    for (r, e), pos in zip(pairs, answers, strict=True):
        spelled = tok.decode([e["input_ids"][j] for j in pos]).strip()
        assert spelled == str(r["meta"]["answer"])
    st = token_stats(model, tok, [e for _, e in pairs], device="cpu", batch_size=3, answers=answers)
    with torch.no_grad():
        for i, ((_, e), pos) in enumerate(zip(pairs, answers, strict=True)):
            x = torch.tensor([e["input_ids"]])
            lp = torch.log_softmax(model(input_ids=x).logits[0].double(), dim=-1)
            want_sum, want_n, want_ans = 0.0, 0, 0.0
            for t in range(1, len(e["input_ids"])):
                if e["labels"][t] != IGNORE:
                    v = float(lp[t - 1, e["input_ids"][t]])
                    want_sum -= v
                    want_n += 1
                    if t in pos:
                        want_ans += v
            assert st["n_tokens"][i] == want_n
            assert st["nll_sum"][i] == pytest.approx(want_sum, rel=1e-4)
            assert st["answer_logprob"][i] == pytest.approx(want_ans, rel=1e-4, abs=1e-4)
    assert int(st["item"].numel()) == sum(st["n_tokens"])


def test_greedy_decoding_equals_generate_and_stops_on_a_prefix(tiny: dict[str, Path]) -> None:
    from repcollapse.train.greedy import greedy_batch
    from repcollapse.train.hf import load_model, load_tokenizer
    from repcollapse.train.pools import prompt_ids

    tok = load_tokenizer(tiny["base"])
    model = load_model(tiny["base"], "cpu", train=False)
    prompts = ["Add 2 and 3.", "Write a short plan about the code.", "Say no.", "the answer is"]
    caps = [5, 12, 1, 9]
    ids = [prompt_ids(tok, p) for p in prompts]
    got, steps = greedy_batch(
        model, ids, caps, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, device="cpu"
    )
    assert steps <= max(caps)
    for p, c, g in zip(ids, caps, got, strict=True):
        with torch.no_grad():
            ref = model.generate(
                input_ids=torch.tensor([p]),
                attention_mask=torch.ones(1, len(p), dtype=torch.long),
                max_new_tokens=c,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )[0, len(p) :].tolist()
        assert g == [t for t in ref if t != tok.eos_token_id][: len(g)]
        assert len(g) == len([t for t in ref if t != tok.eos_token_id])
    # a rule that stops after 2 tokens: the same first tokens, the batch ends sooner
    two = [lambda s, n=[0]: True] * len(ids)  # noqa: B006 - stops at the first check
    cut, cut_steps = greedy_batch(
        model,
        ids,
        caps,
        pad_id=tok.pad_token_id,
        eos_id=tok.eos_token_id,
        device="cpu",
        decode=lambda t: tok.decode(t),
        stops=two,
    )
    assert all(c == g[: len(c)] and len(c) <= 1 for c, g in zip(cut, got, strict=True))
    assert cut_steps == 1


def test_behavior_json_carries_se_and_n_for_every_number(tiny: dict[str, Path]) -> None:
    from repcollapse.train.config import EvalSettings
    from repcollapse.train.evaluate import evaluate_checkpoint
    from repcollapse.train.uncertainty import score_estimate

    s = EvalSettings(
        n_generate=3,
        max_new_tokens=6,
        gen_batch_size=8,
        n_teacher_forced=3,
        future_tasks=("cipher",),
        future_steps=2,
        future_eval_at=(0, 1, 2),
        future_batch_size=2,
        future_n_train=6,
        future_n_eval=3,
        future_rank=2,
        future_max_new_tokens=4,
        future_nll_threshold=50.0,
    )
    b = evaluate_checkpoint(
        tiny["base"], tiny["data"], s, target_domain="math", max_length=64, progress=False
    )
    for key in (
        "target_score",
        "retention",
        "ece",
        "val_loss",
        "target_nll",
        "retention_nll",
        "future_score",
        "future_auc",
        "future_nll",
        "future_nll_auc",
        "future_steps_to_nll",
    ):
        assert key in b and f"{key}_se" in b and f"{key}_n" in b, key
        assert b[key] is not None, key
    items = b["items"]["math"]["score"]
    assert b["target_score_n"] == len(items) == 3
    assert b["target_score_se"] == pytest.approx(score_estimate(items)["se"])
    nll = b["nll"]["math"]
    assert nll["value"] == pytest.approx(
        sum(b["items"]["math"]["nll_sum"]) / sum(b["items"]["math"]["n_tokens"])
    )
    assert b["target_nll"] == nll["value"] and b["target_nll_se"] > 0
    assert b["answer_logprob"]["math"]["n"] == 3
    f = b["future"]["cipher"]
    assert [c[0] for c in f["nll_curve"]] == [0, 1, 2] and f["steps_to_nll"] == 0.0
    assert f["protocol"]["learning_rate"] == s.future_lr and f["protocol"]["train_order_sha256"]
    b2 = evaluate_checkpoint(
        tiny["base"], tiny["data"], s, target_domain="math", max_length=64, progress=False
    )
    assert b2["future"]["cipher"]["protocol"] == f["protocol"]  # same data, order, seed
    assert b2["future_nll"] == pytest.approx(b["future_nll"])


# --- the checkpoints table -----------------------------------------------------------------


def test_checkpoints_table_carries_se_and_n_from_behavior_json(tmp_path: Path) -> None:
    import json

    import numpy as np
    import xarray as xr

    from repcollapse.analyze.tables.write import behavior_detail, checkpoints_frame
    from repcollapse.store_schema import open_store
    from repcollapse.store_schema.schema import CHECKPOINT_BEHAVIOR_DETAIL, CHECKPOINT_TABLE
    from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store

    b = {"target_score": 0.5, "target_score_se": 0.1, "target_score_n": 25, "target_nll": 1.25}
    ds = xr.Dataset(coords={"behavior_json": ("checkpoint", [json.dumps(b), "", "not json"])})
    d = behavior_detail(ds)
    assert list(d.columns) == list(CHECKPOINT_BEHAVIOR_DETAIL)
    assert d.loc[0, "target_score_se"] == 0.1 and d.loc[0, "target_score_n"] == 25
    assert d.loc[0, "target_nll"] == 1.25 and np.isnan(d.loc[0, "target_nll_se"])
    assert d.iloc[1:].isna().all().all()  # an evaluation before SEs, a broken record: NaN
    make_synthetic_store(tmp_path / "s.zarr", SyntheticSpec(n_checkpoints=2))
    frame = checkpoints_frame(open_store(tmp_path / "s.zarr"), {"store_id": "s"})
    assert list(frame.columns) == [*CHECKPOINT_TABLE, *CHECKPOINT_BEHAVIOR_DETAIL, "train_losses"]
    assert frame["target_score"].notna().all() and frame["target_score_se"].isna().all()
