"""CHAMP competition problems with human step-by-step solutions (long chain-of-thought).

``champ_dataset/dataset_files/v0.json`` -> ``problems``: 270 problems, each with ``_text``,
``solution.steps[]._text`` and ``_answer``. Only problems whose answer is one number are kept
(the long_cot scorer checks the final number); the steps are the ``cot`` span.
"""

from __future__ import annotations

import json
import re

from repcollapse.train.data.common import Example, answer_marks
from repcollapse.train.data.real.common import MissingSource, clean, package_file, version_of

DIST = "champ-dataset"
LICENSE = "MIT"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def source() -> str:
    return f"CHAMP (champ-dataset {version_of(DIST)})"


def load() -> list[Example]:
    path = package_file(DIST, "dataset_files/v0.json")
    try:
        problems = json.loads(path.read_text(encoding="utf-8"))["problems"]
    except (json.JSONDecodeError, KeyError) as e:
        raise MissingSource(f"{path}: expected a JSON object with 'problems': {e}") from e
    src = source()
    out: list[Example] = []
    for key in sorted(problems):
        p = problems[key]
        answer = str(p.get("_answer", "")).strip().replace(",", "")
        steps = [clean(s["_text"]) for s in p.get("solution", {}).get("steps", [])]
        if not _NUMBER.fullmatch(answer) or len(steps) < 2:
            continue
        response = "\n".join(steps) + f"\nAnswer: {answer}"
        meta = {"answer": answer, "champ_id": key, "category": p.get("category", "")}
        out.append(
            Example(
                clean(p["_text"]),
                response,
                meta,
                answer_marks(response),
                source=src,
                license=LICENSE,
            )
        )
    return out
