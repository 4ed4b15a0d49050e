"""FanOutQA dev set: single-hop sub-questions with one short answer (factual QA).

``fanoutqa/data/fanout-final-dev.json``: 310 multi-hop questions, each with a
``decomposition`` tree of sub-questions. Kept: leaves (no further decomposition) whose answer
is one string or number. The reference is "The answer is X."; ``meta['answer']`` is X, scored
by normalised exact match.
"""

from __future__ import annotations

import json
from typing import Any

from repcollapse.train.data.common import Example
from repcollapse.train.data.real.common import MissingSource, clean, package_file, version_of

DIST = "fanoutqa"
LICENSE = "CC-BY-SA-4.0"


def source() -> str:
    return f"FanOutQA dev (fanoutqa {version_of(DIST)})"


def _leaves(node: dict[str, Any]) -> list[dict[str, Any]]:
    subs = node.get("decomposition") or []
    if not subs:
        return [node]
    return [leaf for s in subs for leaf in _leaves(s)]


def load() -> list[Example]:
    path = package_file(DIST, "data/fanout-final-dev.json")
    try:
        questions = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MissingSource(f"{path}: expected JSON: {e}") from e
    src = source()
    out: list[Example] = []
    for q in questions:
        for sub in (leaf for s in q.get("decomposition") or [] for leaf in _leaves(s)):
            answer = sub.get("answer")
            if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
                continue
            answer = clean(str(answer))
            if not answer:
                continue
            meta = {"answer": answer, "fanoutqa_id": sub.get("id", "")}
            title = (sub.get("evidence") or {}).get("title")
            if title:
                meta["evidence_title"] = title
            out.append(
                Example(
                    clean(sub["question"]),
                    f"The answer is {answer}.",
                    meta,
                    source=src,
                    license=LICENSE,
                )
            )
    return out
