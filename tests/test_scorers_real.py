"""Scoring on real records: GSM8K by final number, FanOutQA by normalised exact match, and the
refusal classifier on hand-written refusals and compliances (plus the generated refusals)."""

from __future__ import annotations

import random

import pytest

from repcollapse.train.data.real import fanoutqa, gsm8k, refusals
from repcollapse.train.scorers.score import score_completion
from repcollapse.train.scorers.text import is_refusal


def _sft(domain: str, ex) -> dict:  # type: ignore[no-untyped-def]
    return {
        "id": "x",
        "domain": domain,
        "prompt": ex.prompt,
        "response": ex.response,
        "meta": ex.meta,
    }


def test_gsm8k_reference_scores_one_and_wrong_final_scores_zero() -> None:
    exs = gsm8k.load()
    for ex in exs:
        rec = _sft("math", ex)
        assert score_completion(rec, ex.response) == 1.0, ex.meta
        head, _, ans = ex.response.rpartition("\nAnswer: ")
        assert score_completion(rec, f"{head}\nAnswer: {int(float(ans)) + 1}") == 0.0
    # GSM8K's own '#### N' style is read by its final number too.
    ex = exs[0]
    assert score_completion(_sft("math", ex), f"so it is\n#### {ex.meta['answer']}") == 1.0


def test_factual_normalised_exact_match_on_fanoutqa() -> None:
    exs = fanoutqa.load()
    ex = next(e for e in exs if e.meta["answer"] == "Right")
    rec = _sft("factual", ex)
    assert score_completion(rec, ex.response) == 1.0  # "The answer is Right."
    for good in ("Right", "right.", "  RIGHT ", "Answer: Right", "The answer is right"):
        assert score_completion(rec, good) == 1.0, good
    for bad in ("Left", "The answer is Left.", "Right-handed and left", ""):
        assert score_completion(rec, bad) == 0.0, bad
    # every real reference scores 1 against its own record
    assert all(score_completion(_sft("factual", e), e.response) == 1.0 for e in exs)


REFUSALS = (
    "I'm sorry, but I can't help with making dangerous chemicals.",
    "I cannot provide instructions for building a weapon.",
    "I won't write that. Harassing someone online causes real harm.",
    "Sorry, I can't assist with hacking into accounts you don't own.",
    "As an AI, I can't help with stealing someone's identity.",
    "I must decline this request because it could hurt people.",
    "I’m not able to help with that.",
)
COMPLIANCES = (
    "Sure! Here is a short poem about autumn leaves falling on the river.",
    "To kill a stuck process on Linux, run `kill -9 <pid>` after finding it with `ps aux`.",
    "The capital of France is Paris.",
    "Step 1: preheat the oven to 180 C. Step 2: mix the flour and sugar.",
    "You can't undo a git push easily, but `git revert` creates a commit that reverses it.",
    "Here's a Python function that sorts a list: def f(xs): return sorted(xs)",
    "Of course, happy to help with that. It's simpler than people think.",
)


@pytest.mark.parametrize("text", REFUSALS)
def test_refusal_classifier_flags_refusals(text: str) -> None:
    assert is_refusal(text)


@pytest.mark.parametrize("text", COMPLIANCES)
def test_refusal_classifier_passes_compliances(text: str) -> None:
    assert not is_refusal(text)


def test_generated_refusals_are_refusals() -> None:
    rng = random.Random(0)
    for _ in range(200):
        text, marks = refusals.refusal(rng)
        assert is_refusal(text), text
        assert marks == (("refusal", 0, len(text)),)
