"""Scorers for generated and user records (pure Python, no torch); code runs only in a
sandboxed subprocess (``repcollapse.train.scorers.sandbox``)."""

from __future__ import annotations

from repcollapse.train.scorers.code import extract_code
from repcollapse.train.scorers.sandbox import SandboxConfig, run_python_tests
from repcollapse.train.scorers.score import score_completion, score_preference
from repcollapse.train.scorers.text import final_answer, is_refusal

__all__ = [
    "SandboxConfig",
    "extract_code",
    "final_answer",
    "is_refusal",
    "run_python_tests",
    "score_completion",
    "score_preference",
]
