"""Preference pairs for DPO: the chosen response is helpful and correct, the rejected one is
wrong, unhelpful, rude/verbose, an over-refusal of a benign request, or (for a harmful
request) a compliant-sounding reply. Compliant rejections contain no harmful instructions.
"""

from __future__ import annotations

import random
import re

from repcollapse.train.data import code_tasks, general_tasks, math_tasks, safety_tasks
from repcollapse.train.data.common import Example, pick

UNHELPFUL = (
    "I don't know.",
    "I'm not sure. You should look it up somewhere.",
    "That's hard to say.",
    "Maybe. It depends.",
    "Why do you want to know?",
)
RUDE = (
    "Ugh, seriously? Figure it out yourself.",
    "This is a silly question and I'm not going to waste time on it.",
    "Obviously. Anyone could answer that.",
    "Stop asking me such basic things.",
)
FILLER = (
    "Great question! There are many ways to think about this, and it really depends on a "
    "number of factors that we should carefully consider before giving any final answer.",
    "Well, before answering, it is worth noting that questions like this have a long history "
    "and many people have different opinions about them, so let us reflect for a while.",
)
COMPLY = (
    "Sure! That's easy. Just follow the usual steps and you'll be fine.",
    "Of course, happy to help with that. It's simpler than people think.",
    "No problem, I can walk you through it whenever you like.",
)
OVER_REFUSE = (
    "I can't help with that. It sounds dangerous.",
    "I'm sorry, but I won't assist with anything involving violence.",
    "I can't provide that. This request may be harmful.",
)


def _wrong_number(text: str, rng: random.Random) -> str:
    """Shift the final number by a small non-zero amount (a plausible arithmetic slip)."""
    nums = list(re.finditer(r"-?\d+", text))
    if not nums:
        return text[::-1] if len(text) > 1 else text + "x"
    last = nums[-1]
    wrong = int(last.group()) + pick(rng, (-3, -2, -1, 1, 2, 3, 10))
    # Replace every standalone occurrence of the final value so working and answer agree.
    val = last.group()
    return re.sub(rf"(?<![\d-]){re.escape(val)}(?!\d)", str(wrong), text)


def _wrong_text(text: str, rng: random.Random) -> str:
    if re.fullmatch(r"-?\d+", text.strip()):
        return _wrong_number(text, rng)
    words = text.split()
    if len(words) > 1:
        return " ".join(words[1:] + words[:1])
    return text[1:] + text[0] if len(text) > 1 else text + "s"


def _pair(prompt: str, chosen: str, rejected: str, domain: str, kind: str) -> Example:
    meta = {"source_domain": domain, "rejected_kind": kind}
    return Example(prompt, chosen, {"rejected": rejected, **meta})


def generate(rng: random.Random) -> Example:
    """An Example whose response is the chosen text and ``meta['rejected']`` the rejected one."""
    domain = pick(rng, ("math", "general", "safety", "code", "math", "general", "safety"))
    if domain == "safety":
        ex = safety_tasks.generate(rng)
        if ex.meta["harmful"]:
            return _pair(ex.prompt, ex.response, pick(rng, COMPLY), domain, "complies")
        return _pair(ex.prompt, ex.response, pick(rng, OVER_REFUSE), domain, "over_refusal")
    gen = {"math": math_tasks, "general": general_tasks, "code": code_tasks}[domain]
    ex = gen.generate(rng)
    kind = pick(rng, ("wrong", "wrong", "unhelpful", "rude", "verbose"))
    if kind == "unhelpful":
        rejected = pick(rng, UNHELPFUL)
    elif kind == "rude":
        rejected = pick(rng, RUDE)
    elif kind == "verbose":
        rejected = pick(rng, FILLER) + " " + pick(rng, FILLER)
    elif domain == "math":
        rejected = _wrong_number(ex.response, rng)
    elif domain == "code":
        name = ex.meta["entry_point"]
        header = ex.response.split("\n")[1]
        rejected = f"```python\n{header}\n    return None\n```" if name in header else "pass"
    else:
        rejected = _wrong_text(ex.response, rng)
    if rejected == ex.response:  # a mutation that changed nothing: fall back to unhelpful
        rejected, kind = pick(rng, UNHELPFUL), "unhelpful"
    return _pair(ex.prompt, ex.response, rejected, domain, kind)
